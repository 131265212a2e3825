"""``moesaic finetune`` and ``export-adapter`` on a text-only causal LM (a tiny random Llama).

The task: a sentence names the colour of an object, the answer is the colour. Chance is 1/3; the
random model answers nothing right. Asserted: losses fall, held-out greedy accuracy ends well above chance,
the merged model loads with plain ``AutoModelForCausalLM`` and gives the adapter's logits.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from moesaic.finetune.config import ExportAdapterConfig, FinetuneConfig
from moesaic.finetune.export import export_adapter
from moesaic.finetune.train import finetune
from moesaic.testing.causal import make_tiny_causal_lm

COLOURS = ("red", "green", "blue")


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-causal") / "base", initializer_range=0.3, hidden_size=32,
                               intermediate_size=64, head_dim=8)


def _write(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colour = COLOURS[i % 3]
        noun = rng.choice(["shirt", "cup", "car", "hat"])
        rows.append({"question": f"{noun}: {colour}. colour?", "answer": colour})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_finetune_trains_a_text_only_expert_and_exports_it(tiny_lm: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data, held = _write(tmp_path / "d" / "train.jsonl", 48, 0), _write(tmp_path / "d" / "eval.jsonl", 9, 1)
    out = tmp_path / "run"
    config = FinetuneConfig(base_model=str(tiny_lm), data=str(data), eval_data=str(held), output_dir=str(out),
                            batch_size=4, lr=1e-2, max_steps=40, scheduler="constant", max_new_tokens=4)
    result = finetune(config)
    assert result.steps == 40 and result.train_samples == 48 and result.eval_samples == 9
    assert result.budget.image_tokens is not None and result.budget.image_tokens.max == 0
    assert result.final_loss < 0.5 * result.first_loss
    assert result.eval_loss < 0.5 * result.eval_loss_before
    assert result.eval_accuracy_before <= 1 / 3
    assert result.eval_accuracy >= 0.6, result.render()
    assert result.trainable_params < 0.2 * result.total_params

    exported = export_adapter(ExportAdapterConfig(adapter=str(out), output=str(tmp_path / "merged")))
    assert exported.merged_modules == 14 and exported.vision_lora_modules == 0  # 7 linear layers x 2 blocks
    assert exported.max_logit_diff is not None and exported.max_logit_diff < 1e-4
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    ids = tok.apply_chat_template([{"role": "user", "content": "cup: blue. colour?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        changed = (merged(ids).logits - base(ids).logits).abs().max()
    assert float(changed) > 1e-2  # the merged weights carry the fine-tune


def test_text_only_model_refuses_rows_with_images(tiny_lm: Path, tmp_path: Path) -> None:
    from PIL import Image

    from moesaic.finetune.data import DataError

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "d.jsonl").write_text(json.dumps({"image": "a.png", "question": "What?", "answer": "x"}) + "\n")
    config = FinetuneConfig(base_model=str(tiny_lm), data=str(tmp_path / "d.jsonl"), output_dir=str(tmp_path / "r"),
                            eval_fraction=0.0, max_steps=1)
    with pytest.raises(DataError, match="text-only causal LM"):
        finetune(config)
