"""QLoRA on tiny Idefics3, LLaVA and Qwen3-VL: LoRA trained on a 4-bit base lowers the loss, resumes, and exports
into the full-precision base (merged weights = fp weights + B·A exactly, not de-quantised 4-bit ones)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from moesaic.finetune.config import ExportAdapterConfig, FinetuneConfig
from moesaic.finetune.export import export_adapter, probe_logits
from moesaic.finetune.model import load_model, load_processor
from moesaic.finetune.quantize import QUANT_FILE, load_quantized, read_settings
from moesaic.finetune.train import finetune

pytest.importorskip("bitsandbytes")


def _config(base: Path, data: Path, out: Path, **extra: object) -> FinetuneConfig:
    settings = dict(base_model=str(base), data=str(data), output_dir=str(out), method="qlora", batch_size=4,
                    lr=1e-2, scheduler="constant", max_steps=12, save_every=6, eval_fraction=0.25,
                    eval_generate=False, lora={"rank": 4, "alpha": 8})
    return FinetuneConfig.validated({**settings, **extra})


@pytest.mark.parametrize("family", ["idefics3", pytest.param("llava", marks=pytest.mark.slow),
                                    pytest.param("qwen3_vl", marks=pytest.mark.slow)])
def test_qlora_trains_and_exports_into_the_full_precision_base(ft_model, colour_data: Path,  # noqa: ANN001
                                                               tmp_path: Path, family: str) -> None:
    from transformers import AutoModelForImageTextToText

    base, run = ft_model(family), tmp_path / "run"
    result = finetune(_config(base, colour_data, run))
    assert result.method == "qlora" and result.steps == 12
    assert result.final_loss < 0.9 * result.first_loss, result.render()
    assert result.eval_loss < result.eval_loss_before, result.render()
    assert result.trainable_params < 0.2 * result.total_params

    quant = read_settings(run / "adapter")
    assert quant is not None and quant == read_settings(run)
    assert (quant.quant_type, quant.double_quant, quant.compute_dtype) == ("nf4", True, "float32")
    assert quant.gradient_checkpointing and quant.quantized_linear > 10 and quant.full_precision_linear == ["lm_head"]
    saved = load_file(str(run / "checkpoints/step-00000012/trainable.safetensors"))
    assert saved and all(".lora_A." in k or ".lora_B." in k for k in saved)  # only LoRA weights train

    exported = export_adapter(ExportAdapterConfig(adapter=str(run), output=str(tmp_path / "merged")))
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged").eval()
    assert {p.dtype for p in merged.parameters()} == {torch.float32}
    assert not any("Linear4bit" in type(m).__name__ for m in merged.modules())

    # merged weight = full-precision base weight + scale · B·A, bit for bit; the 4-bit weight would differ
    import bitsandbytes.functional as bnbf

    plain = load_model(base).eval()
    fp, out = dict(plain.named_parameters()), dict(merged.named_parameters())
    adapter = load_file(str(run / "adapter/adapter_model.safetensors"))
    quantized = load_quantized(base, quant, torch.device("cpu"))
    modules = dict(quantized.named_modules())
    scale, checked = 8 / 4, 0
    for key in (k for k in adapter if k.endswith("lora_A.weight")):
        name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        delta = (adapter[key.replace("lora_A", "lora_B")] @ adapter[key]) * scale  # (out, in)
        assert torch.equal(out[name + ".weight"], fp[name + ".weight"] + delta), name
        four = modules[name].weight
        dequant = bnbf.dequantize_4bit(four.data, four.quant_state)  # (out, in)
        assert float((out[name + ".weight"] - (dequant + delta)).abs().max()) > 1e-4
        checked += 1
    assert checked == exported.merged_modules > 0

    # logits: equal to fp base + adapter; within the quantisation error of the QLoRA model
    from peft import PeftModel

    processor = load_processor(tmp_path / "merged")
    got = probe_logits(merged, processor)  # (1, seq, vocab)
    want = probe_logits(PeftModel.from_pretrained(load_model(base), run / "adapter"), processor)
    assert torch.allclose(got, want, atol=1e-4) and exported.max_logit_diff < 1e-4
    quant_error = float((probe_logits(plain, processor) - probe_logits(quantized, processor)).abs().max())
    assert exported.quantized_logit_diff is not None and 0 < exported.quantized_logit_diff < 3 * quant_error


@pytest.mark.slow
def test_qlora_resumes_to_the_weights_of_an_uninterrupted_run(ft_model, colour_data: Path,  # noqa: ANN001
                                                               tmp_path: Path) -> None:
    base = ft_model("idefics3")
    common = {"eval_fraction": 0.0, "lora": {"rank": 4, "dropout": 0.1}, "save_every": 3, "batch_size": 2}
    straight = finetune(_config(base, colour_data, tmp_path / "a", max_steps=6, **common))
    first = finetune(_config(base, colour_data, tmp_path / "b", max_steps=3, **common))
    resumed = finetune(_config(base, colour_data, tmp_path / "b", max_steps=6, **common))
    assert first.steps == 3 and straight.resumed_from is None
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("step-00000003")
    a = load_file(str(tmp_path / "a/checkpoints/step-00000006/trainable.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoints/step-00000006/trainable.safetensors"))
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    losses = [json.loads(x)["loss"] for x in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    want = [json.loads(x)["loss"] for x in (tmp_path / "a/metrics.jsonl").read_text().splitlines()]
    assert losses == pytest.approx(want, abs=1e-5) and len(losses) == 6


def test_qlora_settings_fp4_without_double_quant_are_recorded(ft_model, colour_data: Path,  # noqa: ANN001
                                                              tmp_path: Path) -> None:
    run = tmp_path / "run"
    finetune(_config(ft_model("qwen3_vl"), colour_data, run, max_steps=1, eval_fraction=0.0, gradient_checkpointing=False,
                     quantization={"quant_type": "fp4", "double_quant": False, "skip_modules": ["merger"]}))
    saved = json.loads((run / QUANT_FILE).read_text())
    assert saved["quant_type"] == "fp4" and saved["double_quant"] is False and saved["gradient_checkpointing"] is False
    kept = saved["full_precision_linear"]
    assert "lm_head" in kept and "model.visual.merger.linear_fc1" in kept and "model.visual.merger.linear_fc2" in kept
    assert not any("deepstack_merger_list" in n or "q_proj" in n for n in kept)


@pytest.mark.slow
def test_killed_qlora_run_resumes_to_the_same_weights(ft_model, colour_data: Path,  # noqa: ANN001
                                                      tmp_path: Path) -> None:
    import yaml
    from test_finetune_resume import _kill_after_first_checkpoint

    def cfg(out: Path) -> dict:
        return {**_config(ft_model("idefics3"), colour_data, out, max_steps=6, save_every=2, batch_size=2,
                          eval_fraction=0.0, lora={"rank": 4, "dropout": 0.1}).model_dump(), "seed": 7}
    straight = finetune(FinetuneConfig.validated(cfg(tmp_path / "straight")))
    out, path = tmp_path / "killed", tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(cfg(out)))
    _kill_after_first_checkpoint(path, out)
    done = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))
    assert done and done[-1] < 6 and not (out / "result.json").exists()
    resumed = finetune(FinetuneConfig.load(path))
    assert resumed.resumed_from is not None and resumed.steps == straight.steps == 6
    a = load_file(str(tmp_path / "straight/checkpoints/step-00000006/trainable.safetensors"))
    b = load_file(str(out / "checkpoints/step-00000006/trainable.safetensors"))
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert read_settings(out / "adapter") is not None
