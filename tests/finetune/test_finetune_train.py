"""LoRA and full fine-tuning of tiny Idefics3 and Qwen3-VL on 'what colour is the shape?'.

Chance is 1/3 (three colours); the untrained models answer nothing right. Asserted: training loss falls,
held-out loss falls, held-out greedy accuracy ends well above chance; the run's artefacts are complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moesaic.finetune.config import FinetuneConfig
from moesaic.finetune.train import finetune

RECIPES = {"lora": {"lr": 5e-3, "max_steps": 160}, "full": {"lr": 1e-3, "max_steps": 80}}


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("family", ["idefics3", "qwen3_vl"])
def test_finetune_learns_the_colour(ft_model, colour_data: Path, tmp_path: Path, family: str,  # noqa: ANN001
                                    method: str) -> None:
    out = tmp_path / "run"
    config = FinetuneConfig(base_model=str(ft_model(family)), data=str(colour_data), output_dir=str(out),
                            method=method, batch_size=4, eval_fraction=0.25, scheduler="constant",
                            save_every=40, max_new_tokens=6, **RECIPES[method])
    result = finetune(config)
    assert result.steps == RECIPES[method]["max_steps"] and result.train_samples == 36 and result.eval_samples == 12
    assert result.final_loss < 0.85 * result.first_loss
    assert result.eval_loss < 0.85 * result.eval_loss_before
    assert result.eval_accuracy_before <= 1 / 3
    assert result.eval_accuracy >= 0.6, result.render()
    if method == "lora":
        assert result.trainable_params < 0.2 * result.total_params
        assert (out / "adapter" / "adapter_config.json").is_file()
        assert (out / "adapter" / "adapter_model.safetensors").stat().st_size > 1000
    else:
        assert (out / "model" / "config.json").is_file() and (out / "model" / "model.safetensors").is_file()
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, result.steps + 1))
    assert log[-1]["samples"] == 4 * result.steps
    kept = [f"step-{result.steps - 40:08d}", f"step-{result.steps:08d}"]  # keep_checkpoints=2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == kept
    assert (out / "moesaic_config.yaml").is_file() and json.loads((out / "budget_report.json").read_text())["samples"]
    assert json.loads((out / "result.json").read_text())["eval_accuracy"] == result.eval_accuracy


def test_full_training_keeps_the_vision_tower_frozen(ft_model, colour_data: Path,  # noqa: ANN001
                                                     tmp_path: Path) -> None:
    from safetensors.torch import load_file

    base = ft_model("idefics3")
    config = FinetuneConfig(base_model=str(base), data=str(colour_data), output_dir=str(tmp_path / "run"),
                            method="full", max_steps=3, batch_size=2, eval_fraction=0.1, eval_generate=False)
    finetune(config)
    before, after = load_file(str(base / "model.safetensors")), load_file(str(tmp_path / "run/model/model.safetensors"))
    vision = [k for k in before if "vision_model" in k]
    text = [k for k in before if "text_model.layers" in k]
    assert vision and all(bool((before[k] == after[k]).all()) for k in vision)
    assert any(not bool((before[k] == after[k]).all()) for k in text)


def test_cli_finetune_reads_a_yaml_file(ft_model, colour_data: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from moesaic.cli import main

    cfg = tmp_path / "ft.yaml"
    cfg.write_text(f"base_model: {ft_model('idefics3')}\ndata: {colour_data}\noutput_dir: {tmp_path / 'run'}\n"
                   "max_steps: 2\neval_fraction: 0.1\neval_generate: false\nlora:\n  rank: 4\n")
    assert main(["finetune", str(cfg), "--lora.alpha", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 2 and result["method"] == "lora"
    adapter = json.loads((tmp_path / "run/adapter/adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8
    assert main(["finetune", str(cfg), "--method", "sgd"]) == 2
    assert "method" in capsys.readouterr().err


def test_what_trains_vision_tower_versus_projector(ft_model) -> None:  # noqa: ANN001
    from moesaic.finetune.config import LoraSettings
    from moesaic.finetune.model import apply_method, load_model, lora_targets

    model = load_model(ft_model("qwen3_vl"))
    text_only = lora_targets(model, "all-linear", include_vision=False)
    with_vision = lora_targets(model, "all-linear", include_vision=True)
    assert not any(".blocks." in n for n in text_only) and any(".blocks." in n for n in with_vision)
    assert any("merger" in n for n in text_only)  # the projector is not the vision tower
    assert lora_targets(model, ["q_proj"], False) == [n for n in text_only if n.endswith("q_proj")]
    full = apply_method(model, "full", LoraSettings(), freeze_vision=True)
    grads = {n: p.requires_grad for n, p in full.named_parameters()}
    assert not any(g for n, g in grads.items() if ".blocks." in n)
    assert all(g for n, g in grads.items() if "merger" in n or "language_model" in n)


@pytest.mark.slow
def test_two_processes_share_each_global_batch(ft_model, colour_data: Path, tmp_path: Path) -> None:  # noqa: ANN001
    import os
    import subprocess
    import sys

    import torch

    out = tmp_path / "run"
    cfg = tmp_path / "ft.yaml"
    cfg.write_text(f"base_model: {ft_model('idefics3')}\ndata: {colour_data}\noutput_dir: {out}\nmax_steps: 4\n"
                   "batch_size: 2\neval_fraction: 0.0\nlora: {dropout: 0.1}\n")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "MOESAIC_PROGRESS": "0"}
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "-m", "moesaic.cli", "finetune", str(cfg)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in log] == [4, 8, 12, 16]  # 2 processes x batch 2 per step, logged once
    rngs = torch.load(out / "checkpoints/step-00000004/rng.pt", weights_only=False)
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])
    assert (out / "adapter/adapter_model.safetensors").is_file()


def test_gradient_checkpointing_gives_the_same_training(ft_model, colour_data: Path,  # noqa: ANN001
                                                        tmp_path: Path) -> None:
    common = dict(base_model=str(ft_model("qwen3_vl")), data=str(colour_data), max_steps=3, batch_size=2,
                  eval_fraction=0.0, lr=1e-2)
    plain = finetune(FinetuneConfig(output_dir=str(tmp_path / "a"), **common))
    ckpt = finetune(FinetuneConfig(output_dir=str(tmp_path / "b"), gradient_checkpointing=True, **common))

    def losses(run: str) -> list[float]:
        return [json.loads(x)["loss"] for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert losses("a") == pytest.approx(losses("b"), abs=1e-5) and len(losses("a")) == 3
    assert plain.final_loss == pytest.approx(ckpt.final_loss, abs=1e-5)
