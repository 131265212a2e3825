"""Tiny-model factories: token ids agree with the tokenizer, chat templates expand images, saved models
reload with the same logits, seeds decide the weights."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from moesaic.backends.compat import load_processor
from moesaic.errors import ConfigError
from moesaic.testing import FAMILIES, VILT_LABELS, make_tiny_model, tiny_config, tiny_model, tiny_processor

GENERATIVE = ("idefics3", "llava", "qwen3_vl", "blip2")
# image placeholder token and how many of them one 32 px image becomes
IMAGE_TOKENS = {
    "idefics3": ("<image>", 4),  # 4x4 patches, pixel shuffle 2 -> 4
    "llava": ("<image>", 16),  # 4x4 patches, CLS dropped
    "qwen3_vl": ("<|image_pad|>", 4),  # 4x4 patches, 2x2 merge -> 4
    "blip2": ("<image>", 4),  # 4 query tokens
}


def _messages(image: Image.Image) -> list[dict[str, object]]:
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "what is it?"}]}]


def _image(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (40, 30), color)


def _image_token_id(config: object, family: str) -> int:
    return {
        "idefics3": lambda c: c.image_token_id,
        "llava": lambda c: c.image_token_index,
        "qwen3_vl": lambda c: c.image_token_id,
        "blip2": lambda c: c.image_token_index,
    }[family](config)


@pytest.mark.parametrize("family", GENERATIVE)
def test_config_ids_match_tokenizer(family: str) -> None:
    config = tiny_config(family)
    tok = tiny_processor(family).tokenizer
    token, _ = IMAGE_TOKENS[family]
    assert _image_token_id(config, family) == tok.convert_tokens_to_ids(token)
    assert config.text_config.vocab_size == len(tok) < 512
    assert config.text_config.pad_token_id == tok.pad_token_id


@pytest.mark.parametrize("family", GENERATIVE)
def test_chat_template_expands_images(family: str, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    processor = load_processor(tiny_model_dir(family))
    batch = processor.apply_chat_template(
        _messages(_image((200, 20, 20))), add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt",
    )
    token, count = IMAGE_TOKENS[family]
    ids = batch["input_ids"][0]
    assert int((ids == processor.tokenizer.convert_tokens_to_ids(token)).sum()) == count
    assert "what is it?" in processor.tokenizer.decode(ids)
    assert batch["pixel_values"].numel() > 0


@pytest.mark.parametrize("family", GENERATIVE)
def test_saved_model_reloads_with_same_logits(family: str, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForImageTextToText

    path = tiny_model_dir(family)
    processor = load_processor(path)
    batch = processor.apply_chat_template(
        _messages(_image((20, 200, 20))), add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt",
    )
    loaded = AutoModelForImageTextToText.from_pretrained(path).eval()
    fresh = tiny_model(family, seed=0)
    with torch.no_grad():
        a = loaded(**batch).logits  # (1, seq, vocab)
        b = fresh(**batch).logits
    assert a.shape == (1, batch["input_ids"].shape[1], len(processor.tokenizer))
    torch.testing.assert_close(a, b)


def test_seed_decides_weights() -> None:
    a = tiny_model("llava", seed=0).state_dict()
    b = tiny_model("llava", seed=0).state_dict()
    c = tiny_model("llava", seed=1).state_dict()
    key = "model.language_model.layers.0.mlp.gate_proj.weight"
    assert torch.equal(a[key], b[key])
    assert not torch.equal(a[key], c[key])


@pytest.mark.parametrize("family", ["idefics3", "llava"])
def test_llama_text_model_and_overrides(family: str) -> None:
    model = tiny_model(family, intermediate_size=96, num_hidden_layers=1)
    assert model.config.text_config.model_type == "llama"
    names = dict(model.named_parameters())
    gate = next(v for k, v in names.items() if k.endswith("layers.0.mlp.gate_proj.weight"))
    assert gate.shape == (96, 64)  # (intermediate, hidden)
    assert not any(".layers.1." in k and "language_model" in k for k in names)


def test_qwen3_vl_uses_its_own_text_config() -> None:
    config = tiny_config("qwen3_vl")
    assert config.text_config.model_type == "qwen3_vl_text"
    assert config.vision_config.out_hidden_size == config.text_config.hidden_size


def test_vilt_and_git_save_and_reload(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import GitForCausalLM, ViltForQuestionAnswering

    vilt = ViltForQuestionAnswering.from_pretrained(make_tiny_model("vilt", tmp_path / "vilt"))
    assert [vilt.config.id2label[i] for i in range(len(VILT_LABELS))] == list(VILT_LABELS)
    git = GitForCausalLM.from_pretrained(make_tiny_model("git", tmp_path / "git"))
    tok = load_processor(tmp_path / "git").tokenizer
    assert git.config.bos_token_id == tok.cls_token_id and git.config.eos_token_id == tok.sep_token_id
    assert git.config.vocab_size == len(tok)


def test_unknown_family_names_the_choices() -> None:
    with pytest.raises(ConfigError) as info:
        tiny_config("nope")
    assert "idefics3" in (info.value.hint or "")
    assert set(FAMILIES) == {"idefics3", "llava", "qwen3_vl", "blip2", "vilt", "git", "idefics2", "mistral3",
                             "llava_onevision", "internvl", "mllama", "qwen3_5"}
