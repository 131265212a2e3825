"""ViLT (answer classification) and GIT (captioning) backends, and registry routing by model_type."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from moesaic.backends import load_backend
from moesaic.backends.base import BackendOptions, GenerationParams
from moesaic.backends.compat import load_processor
from moesaic.backends.git import GitBackend
from moesaic.backends.hf import HFBackend
from moesaic.backends.registry import resolve_backend
from moesaic.backends.vilt import ViltBackend
from moesaic.errors import InputError, ModelLoadError
from moesaic.inputs.messages import Turn
from moesaic.testing import VILT_LABELS


CPU = BackendOptions(device="cpu", dtype="float32")  # compared against direct float32 cpu forwards


def _noise(seed: int) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8).numpy())


def _ask(image: Image.Image, text: str) -> list[Turn]:
    return [Turn("user", (image, text))]


@pytest.mark.parametrize(
    ("family", "backend"),
    [("vilt", "vilt"), ("git", "git"), ("idefics3", "hf"), ("llava", "hf"), ("qwen3_vl", "hf"), ("blip2", "hf")],
)
def test_registry_routes_by_model_type(family: str, backend: str, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    assert resolve_backend(str(tiny_model_dir(family))).name == backend


def test_generic_backend_refuses_a_classifier_with_a_hint(tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelLoadError) as info:
        load_backend(str(tiny_model_dir("vilt")), CPU, backend="hf")
    assert "not an image-text-to-text model" in info.value.message
    assert "--backend" in (info.value.hint or "")


def test_vilt_answers_with_the_argmax_label(tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    from transformers import ViltForQuestionAnswering

    path = tiny_model_dir("vilt")
    backend = load_backend(str(path), CPU)
    assert isinstance(backend, ViltBackend) and backend.max_images == 1
    image, question = _noise(1), "what color is the shirt?"
    answer = backend.generate(_ask(image, question))
    assert answer.text in VILT_LABELS
    model = ViltForQuestionAnswering.from_pretrained(path).eval()
    processor = load_processor(path)
    with torch.no_grad():
        logits = model(**processor(images=image, text=question, return_tensors="pt")).logits[0]  # (labels,)
    assert answer.text == model.config.id2label[int(logits.argmax())]
    top = answer.details["top"]
    assert top[0]["label"] == answer.text
    assert top[0]["score"] == pytest.approx(float(torch.sigmoid(logits.max())), abs=1e-5)
    assert answer.prompt_tokens == len(processor.tokenizer(question).input_ids)


def test_vilt_batch_is_one_forward_and_matches_singles(tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    backend = load_backend(str(tiny_model_dir("vilt")), CPU)
    prompts = [_ask(_noise(i), q) for i, q in enumerate(["is it a cat?", "how many dogs are there in the grass?"])]
    singles = backend.scores(prompts[:1]), backend.scores(prompts[1:])  # type: ignore[attr-defined]
    calls = backend.forward_calls  # type: ignore[attr-defined]
    answers = backend.generate_batch(prompts)
    assert backend.forward_calls == calls + 1  # type: ignore[attr-defined]
    batched = backend.scores(prompts)  # type: ignore[attr-defined]
    torch.testing.assert_close(batched, torch.cat(singles), atol=1e-5, rtol=1e-4)
    assert [a.text for a in answers] == [backend.generate(p).text for p in prompts]


def test_vilt_needs_one_image(tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    backend = load_backend(str(tiny_model_dir("vilt")), CPU)
    with pytest.raises(InputError, match="exactly one image"):
        backend.generate([Turn("user", ("no image here",))])


@pytest.mark.parametrize("question", ["", "what is in the image?"])
def test_git_tokens_equal_direct_generate(question: str, tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    from transformers import GitForCausalLM

    path = tiny_model_dir("git")
    backend = load_backend(str(path), CPU)
    assert isinstance(backend, GitBackend) and not isinstance(backend, HFBackend)
    image = _noise(2)
    answer = backend.generate(_ask(image, question), GenerationParams(max_new_tokens=8))

    model = GitForCausalLM.from_pretrained(path).eval()
    processor = load_processor(path)
    tok = processor.tokenizer
    ids = torch.tensor([[tok.cls_token_id, *tok(question, add_special_tokens=False).input_ids]])
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model.generate(pixel_values=pixels, input_ids=ids, max_new_tokens=8, do_sample=False,
                             eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id)
    new = out[0, ids.shape[1] :].tolist()
    if tok.sep_token_id in new:
        new = new[: new.index(tok.sep_token_id) + 1]
    assert answer.details["token_ids"] == new and len(new) > 0
    assert answer.text == tok.decode(new, skip_special_tokens=True).strip()
    assert answer.prompt_tokens == ids.shape[1] and answer.completion_tokens == len(new)
    assert answer.finish_reason == ("stop" if new[-1] == tok.sep_token_id or len(new) < 8 else "length")


def test_git_seeded_sampling_is_reproducible(tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    backend = load_backend(str(tiny_model_dir("git")), CPU)
    params = GenerationParams(max_new_tokens=10, temperature=1.0, seed=11)
    prompt = _ask(_noise(3), "")
    a, b = backend.generate(prompt, params), backend.generate(prompt, params)
    c = backend.generate(prompt, params.model_copy(update={"seed": 12}))
    assert a.details["token_ids"] == b.details["token_ids"] != c.details["token_ids"]
