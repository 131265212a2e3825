"""A tiny Idefics3 behind the server through the real HFBackend: greedy answers over the API equal the
backend's direct answers, and concurrent requests share batched generate calls."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import httpx
import openai
import pytest
from serve_helpers import data_url, png_bytes, running

from moesaic.backends.base import GenerationParams
from moesaic.inputs.messages import ChatMessage, resolve_messages
from moesaic.serve.app import create_app
from moesaic.serve.settings import ServeConfig

pytest.importorskip("moesaic.backends.hf")
MAX_TOKENS = 6
COLORS = [(255, 0, 0), (0, 160, 0), (0, 0, 255), (250, 250, 0)]
QUESTIONS = ["what is this?", "describe it", "which colour?", "hello"]


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    from moesaic.backends.registry import load_backend
    from moesaic.testing import make_tiny_model

    folder = make_tiny_model("idefics3", tmp_path_factory.mktemp("tiny") / "idefics3")
    backend = load_backend(str(folder))
    assert type(backend).__name__ == "HFBackend" and backend.can_batch
    settings = ServeConfig(model=str(folder), served_model_name="tiny-idefics3", allow_host=["127.0.0.1"],
                           max_batch_size=4, batch_wait_ms=100)
    app = create_app(settings, backend)
    with running(app) as url:
        yield url, backend, app.state.service.policy


def messages(i: int, image: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                         {"type": "text", "text": QUESTIONS[i]}]}]


def direct(backend, policy, msgs: list[dict]) -> str:
    turns = resolve_messages([ChatMessage.model_validate(m) for m in msgs], policy)
    return backend.generate(turns, GenerationParams(max_new_tokens=MAX_TOKENS)).text


def test_greedy_api_answers_equal_direct_answers(tiny_hf, image_server):
    url, backend, policy = tiny_hf
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
    by_url = messages(0, f"{image_server}/red.png")
    by_data = messages(1, data_url(png_bytes((0, 160, 0))))
    for msgs in (by_url, by_data):
        out = client.chat.completions.create(model="tiny-idefics3", messages=msgs, max_tokens=MAX_TOKENS,
                                             temperature=0)
        assert out.choices[0].message.content == direct(backend, policy, msgs)
        assert out.usage.completion_tokens >= 1 and out.usage.prompt_tokens > 10
    streamed = client.chat.completions.create(model="tiny-idefics3", messages=by_url, max_tokens=MAX_TOKENS,
                                              stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == direct(backend, policy, by_url)
    inv = httpx.post(f"{url}/invocations", json={"question": QUESTIONS[0], "image": f"{image_server}/red.png",
                                                 "max_tokens": MAX_TOKENS}, timeout=60)
    assert inv.json()["answer"] == direct(backend, policy, by_url)


def test_concurrent_requests_are_batched_with_equal_answers(tiny_hf, monkeypatch):
    url, backend, policy = tiny_hf
    all_msgs = [messages(i, data_url(png_bytes(c))) for i, c in enumerate(COLORS)]
    expected = [direct(backend, policy, m) for m in all_msgs]
    # A first request holds the model thread until the others are queued, so that batching does not depend
    # on how fast a busy machine parses the concurrent bodies.
    entered, release, single = threading.Event(), threading.Event(), backend.generate

    def held(prompt, params=None):  # noqa: ANN001, ANN202
        entered.set()
        release.wait(30)
        return single(prompt, params)

    monkeypatch.setattr(backend, "generate", held)
    before = backend.forward_calls
    bodies = [{"model": "tiny-idefics3", "messages": m, "max_tokens": MAX_TOKENS} for m in all_msgs]
    post = lambda b: httpx.post(f"{url}/v1/chat/completions", json=b, timeout=60)  # noqa: E731
    with cf.ThreadPoolExecutor(len(bodies) + 1) as pool:
        blocker = pool.submit(post, bodies[0])
        assert entered.wait(30), "the blocker never reached the model"
        futures = [pool.submit(post, b) for b in bodies]
        _wait_for_metric(url, f"moesaic_queue_depth {float(len(bodies))}")
        release.set()
        responses = [f.result() for f in futures]
        assert blocker.result().status_code == 200
    answers = [r.json()["choices"][0]["message"]["content"] for r in responses]
    calls = backend.forward_calls - before
    assert answers == expected
    assert all(answers) and len(set(answers)) > 1, answers  # real, image-dependent text, not empty strings
    assert calls == 2, f"the blocker and {len(bodies)} queued requests took {calls} generate calls (want 1 + 1)"


def _wait_for_metric(url: str, line: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
            return
        time.sleep(0.05)
    raise AssertionError(f"/metrics never showed {line!r}")
