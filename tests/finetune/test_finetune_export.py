"""export-adapter: LoRA (text and vision tower) merged into full weights that plain transformers loads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ft_helpers import shape_image
from moesaic.errors import ConfigError
from moesaic.finetune.config import ExportAdapterConfig, FinetuneConfig
from moesaic.finetune.evaluate import prompt_inputs
from moesaic.finetune.export import export_adapter
from moesaic.finetune.model import load_model, load_processor
from moesaic.finetune.train import finetune


@pytest.mark.parametrize("family", ["idefics3", "qwen3_vl"])
def test_merged_weights_load_in_transformers_and_match_the_adapter(ft_model, colour_data: Path,  # noqa: ANN001
                                                                   tmp_path: Path, family: str) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base = ft_model(family)
    run = tmp_path / "run"
    finetune(FinetuneConfig(base_model=str(base), data=str(colour_data), output_dir=str(run), max_steps=8,
                            lr=1e-2, batch_size=2, eval_fraction=0.0, lora={"include_vision": True, "rank": 4}))
    result = export_adapter(ExportAdapterConfig(adapter=str(run), output=str(tmp_path / "merged")))
    assert result.vision_lora_modules > 0 and result.merged_modules > result.vision_lora_modules
    assert result.max_logit_diff is not None and result.max_logit_diff < 1e-4

    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    peft_model = PeftModel.from_pretrained(load_model(base), run / "adapter").eval()  # the adapter stays a PEFT folder
    processor = load_processor(tmp_path / "merged")
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the shape?"}]}]
    inputs = prompt_inputs(processor, msgs, [shape_image("green", random.Random(3))])
    with torch.no_grad():
        want, got = peft_model(**inputs).logits, merged(**inputs).logits  # (1, seq, vocab)
    assert torch.allclose(want, got, atol=1e-4), float((want - got).abs().max())
    plain = load_model(base).eval()
    with torch.no_grad():
        assert float((plain(**inputs).logits - got).abs().max()) > 1e-3, "the adapter must change the logits"

    before, after = load_file(str(base / "model.safetensors")), load_file(str(tmp_path / "merged/model.safetensors"))
    vision_keys = [k for k in before if any(m in k for m in ("vision_model", "visual"))
                   and k.endswith(("q_proj.weight", "qkv.weight"))]
    assert vision_keys and any(not torch.equal(before[k], after[k]) for k in vision_keys if k in after)
    assert (tmp_path / "merged/moesaic_config.yaml").is_file()

    from moesaic.cli import main

    assert main(["export-adapter", str(run / "adapter"), str(tmp_path / "merged2"), "--no-verify"]) == 0
    again = load_file(str(tmp_path / "merged2/model.safetensors"))
    assert all(torch.equal(after[k], again[k]) for k in after)


def test_export_names_the_missing_adapter(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no LoRA adapter") as info:
        export_adapter(ExportAdapterConfig(adapter=str(tmp_path), output=str(tmp_path / "out")))
    assert "method: lora" in (info.value.hint or "")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/nowhere"}))
    with pytest.raises(ConfigError, match="not a local model folder"):
        export_adapter(ExportAdapterConfig(adapter=str(tmp_path), output=str(tmp_path / "out")))
