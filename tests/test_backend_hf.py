"""HFBackend on tiny saved Idefics3 / LLaVA / Qwen3-VL / BLIP-2 models, loaded through the registry."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from moesaic.backends import load_backend
from moesaic.backends.base import BackendOptions, GenerationParams
from moesaic.backends.hf import HFBackend
from moesaic.errors import InputError, ModelLoadError
from moesaic.inputs.messages import Turn
from moesaic.testing import tiny_model, tiny_processor

FAMILIES = ("idefics3", "llava", "qwen3_vl", "blip2")
GREEDY = GenerationParams(max_new_tokens=6)


def _noise(seed: int, size: tuple[int, int] = (32, 32)) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def _ask(image: Image.Image | None, text: str) -> list[Turn]:
    parts: tuple[object, ...] = (text,) if image is None else (image, text)
    return [Turn("user", parts)]  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def backends(tiny_model_dir) -> dict[str, HFBackend]:  # type: ignore[no-untyped-def]
    # cpu float32 pinned: exact batched == single equality is a float32 property, not a bf16 GPU one
    cpu = BackendOptions(device="cpu", dtype="float32")
    return {f: load_backend(str(tiny_model_dir(f)), cpu) for f in FAMILIES}  # type: ignore[misc]


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_and_single_greedy_give_identical_tokens(family: str, backends) -> None:  # type: ignore[no-untyped-def]
    backend = backends[family]
    assert isinstance(backend, HFBackend) and backend.can_batch and backend.can_stream
    prompts = [_ask(_noise(1), "what is it?"), _ask(_noise(2, (48, 40)), "describe the picture in one sentence.")]
    singles = [backend.generate(p, GREEDY) for p in prompts]
    calls = backend.forward_calls
    batched = backend.generate_batch(prompts, GREEDY)
    assert backend.forward_calls == calls + 1  # one generate() for the whole batch
    for one, many in zip(singles, batched, strict=True):
        assert one.details["token_ids"] == many.details["token_ids"]
        assert one.text == many.text and one.prompt_tokens == many.prompt_tokens
        assert 0 < one.completion_tokens <= GREEDY.max_new_tokens
        ended = one.completion_tokens < GREEDY.max_new_tokens or one.details["token_ids"][-1] in backend._ends
        assert one.finish_reason == ("stop" if ended else "length")
    assert singles[0].prompt_tokens != singles[1].prompt_tokens  # the batch really was padded


def test_batches_are_cut_at_max_batch_size(backends) -> None:  # type: ignore[no-untyped-def]
    backend = backends["idefics3"]
    prompts = [_ask(_noise(i), f"question {i}?") for i in range(3)]
    backend.max_batch_size = 2
    try:
        calls = backend.forward_calls
        answers = backend.generate_batch(prompts, GREEDY)
        assert backend.forward_calls == calls + 2
    finally:
        backend.max_batch_size = 8
    assert [a.details["token_ids"] for a in answers] == [backend.generate(p, GREEDY).details["token_ids"] for p in prompts]


@pytest.mark.parametrize("family", ["idefics3", "llava", "qwen3_vl"])
def test_mixed_batch_text_only_multi_image_multi_turn(family: str, backends) -> None:  # type: ignore[no-untyped-def]
    backend = backends[family]
    image = _noise(6)
    prompts = [
        _ask(None, "hello"),
        [Turn("user", (image, "and", _noise(7), "which one is red?"))],
        [Turn("system", ("be brief",)), Turn("user", (image, "what?")), Turn("assistant", ("a cat",)),
         Turn("user", ("sure?",))],
    ]
    batched = backend.generate_batch(prompts, GREEDY)
    singles = [backend.generate(p, GREEDY) for p in prompts]
    assert [a.details["token_ids"] for a in batched] == [a.details["token_ids"] for a in singles]
    assert len({a.prompt_tokens for a in singles}) == 3


@pytest.mark.parametrize("family", FAMILIES)
def test_image_content_changes_logits(family: str, backends) -> None:  # type: ignore[no-untyped-def]
    backend = backends[family]
    a = backend.logits(_ask(_noise(1), "what is it?"))
    again = backend.logits(_ask(_noise(1), "what is it?"))
    b = backend.logits(_ask(_noise(2), "what is it?"))
    assert a.shape == (len(backend.tokenizer),)
    torch.testing.assert_close(a, again)
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_seeded_sampling_is_reproducible(family: str, backends) -> None:  # type: ignore[no-untyped-def]
    backend = backends[family]
    prompt = _ask(_noise(3), "what is it?")
    params = GenerationParams(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7)
    state = torch.get_rng_state()
    first = backend.generate(prompt, params)
    second = backend.generate(prompt, params)
    other = backend.generate(prompt, params.model_copy(update={"seed": 8}))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    assert first.details["token_ids"] == second.details["token_ids"]
    assert first.details["token_ids"] != other.details["token_ids"]


def test_tiny_temperatures_decode_greedily_instead_of_crashing(backends) -> None:  # type: ignore[no-untyped-def]
    backend = backends["idefics3"]
    prompt = _ask(_noise(5), "what is it?")
    greedy = backend.generate(prompt, GenerationParams(max_new_tokens=6))
    for t in (5e-324, 1e-40, 9e-6):  # logits / t overflow to inf: the sampler would fail
        tiny = backend.generate(prompt, GenerationParams(max_new_tokens=6, temperature=t, seed=1))
        assert tiny.details["token_ids"] == greedy.details["token_ids"], t


@pytest.mark.parametrize("family", FAMILIES)
def test_stream_deltas_concatenate_to_the_answer(family: str, backends) -> None:  # type: ignore[no-untyped-def]
    backend = backends[family]
    prompt = _ask(_noise(4), "what is it?")
    params = GenerationParams(max_new_tokens=10)
    chunks = list(backend.stream(prompt, params))
    final = chunks[-1].answer
    assert final is not None and all(c.answer is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks[:-1]) == final.text
    assert final.details["token_ids"] == backend.generate(prompt, params).details["token_ids"]


def _stop_from(text: str) -> str:
    """A two-character piece of ``text`` (not at its start) made of plain printable characters."""
    for i in range(1, len(text) - 1):
        piece = text[i : i + 2]
        if piece.isprintable() and "\ufffd" not in piece and not piece.isspace():
            return piece
    pytest.skip(f"no usable stop string in {text!r}")


@pytest.mark.parametrize("family", ["llava", "qwen3_vl"])
def test_stop_strings_cut(family: str, backends) -> None:  # type: ignore[no-untyped-def]
    backend = backends[family]
    prompt = _ask(_noise(5), "what is it?")
    full = backend.generate(prompt, GenerationParams(max_new_tokens=16))
    stop = _stop_from(full.text)
    expected = full.text[: full.text.find(stop)].strip()
    params = GenerationParams(max_new_tokens=16, stop=(stop,))
    cut = backend.generate(prompt, params)
    assert cut.text == expected and stop not in cut.text
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens <= full.completion_tokens
    streamed = list(backend.stream(prompt, params))
    assert "".join(c.text for c in streamed[:-1]) == expected == streamed[-1].answer.text  # type: ignore[union-attr]


def test_text_only_prompt_and_from_objects(backends) -> None:  # type: ignore[no-untyped-def]
    loaded = backends["llava"]
    built = HFBackend.from_objects(tiny_model("llava", seed=0), tiny_processor("llava"), name="built")
    prompt = _ask(None, "hello there")
    a, b = loaded.generate(prompt, GREEDY), built.generate(prompt, GREEDY)
    assert a.details["token_ids"] == b.details["token_ids"] and len(a.details["token_ids"]) > 0
    assert b.model == "built"
    bare = tiny_processor("llava")
    bare.chat_template = None
    with pytest.raises(ModelLoadError, match="no chat template"):
        HFBackend.from_objects(built.model, bare, name="bare")


def test_blip2_takes_one_image(backends) -> None:  # type: ignore[no-untyped-def]
    backend = backends["blip2"]
    assert backend.max_images == 1
    with pytest.raises(InputError, match="at most 1 image"):
        backend.generate([Turn("user", (_noise(1), _noise(2), "two?"))], GREEDY)
    with pytest.raises(InputError, match="none was given"):
        backend.generate_batch([_ask(_noise(1), "one"), _ask(None, "text only")], GREEDY)


def test_dtype_choice(tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    backend = load_backend(str(tiny_model_dir("llava")), BackendOptions(dtype="bfloat16", device="cpu"))
    assert next(backend.model.parameters()).dtype == torch.bfloat16  # type: ignore[attr-defined]
    answer = backend.generate(_ask(_noise(1), "what is it?"), GREEDY)
    assert answer.completion_tokens > 0


def test_missing_folder_and_offline_hub_id_fail_with_hints(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelLoadError) as missing:
        load_backend(str(tmp_path / "nope"))
    assert "does not exist" in missing.value.message and "path" in (missing.value.hint or "")
    with pytest.raises(ModelLoadError) as offline:
        load_backend("moesaic-test/not-a-model")
    assert "moesaic-test/not-a-model" in offline.value.message
    assert "download" in (offline.value.hint or "")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            load_backend("moesaic-test/not-a-model", BackendOptions(device="cuda:0"))


def test_auto_device_and_dtype() -> None:
    from moesaic.backends.hf_load import resolve_device, resolve_dtype

    device = resolve_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("float16", device) == torch.float16


def test_cancel_event_ends_decoding_at_the_next_step(backends) -> None:  # type: ignore[no-untyped-def]
    """A streaming client that goes away sets the event; generate must stop instead of running to max."""
    import threading

    from moesaic.backends.hf_chat import encode_conversations

    backend = backends["idefics3"]
    batch = encode_conversations(backend.processor, [_ask(_noise(7), "what is it?")], backend.device)
    saved_eos = backend.model.generation_config.eos_token_id
    backend.model.generation_config.eos_token_id = None  # no early end: only max_new_tokens or the event
    try:
        params = GenerationParams(max_new_tokens=40)
        assert backend._run_generate(batch, params).shape[1] == 40
        cancelled = threading.Event()
        cancelled.set()
        assert backend._run_generate(batch, params, cancel=cancelled).shape[1] == 1
    finally:
        backend.model.generation_config.eos_token_id = saved_eos
