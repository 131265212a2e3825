"""The HTTP API end to end: a real uvicorn server, the official openai SDK and raw httpx requests.

A small deterministic backend (tests/serve/conftest.py) names each image's colour, so answers prove that
every image form (URL, data URL, bare base64) was decoded; the tiny HF model runs in test_serve_hf.py.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import time

import httpx
import openai
import pytest
from serve_helpers import ColorBackend, data_url, png_bytes, running

from moesaic.serve.app import create_app
from moesaic.serve.settings import ServeConfig

LIMITS = dict(max_images=3, max_image_pixels=64 * 64, max_prompt_tokens=50, max_tokens_limit=64,
              max_body_bytes=200_000)


def make_app(backend: ColorBackend | None = None, **settings: object):
    return create_app(ServeConfig(model="colors", **settings), backend or ColorBackend())


@pytest.fixture(scope="module")
def server():
    backend = ColorBackend()
    with running(make_app(backend, allow_host=["127.0.0.1"], **LIMITS)) as url:
        yield url, backend


def sdk(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def user(*parts: dict) -> list[dict]:
    return [{"role": "user", "content": list(parts)}]


def img(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def assert_alive(url: str) -> None:
    r = httpx.post(f"{url}/invocations", json={"question": "still there", "image": data_url(png_bytes((0, 0, 255)))})
    assert r.status_code == 200 and r.json()["answer"] == "blue about still there"


def test_sdk_url_data_url_and_base64_images(server, image_server):
    url, _ = server
    bare = base64.b64encode(png_bytes((255, 0, 0))).decode()
    resp = sdk(url).chat.completions.create(
        model="colors",
        messages=user(img(f"{image_server}/green.png"), img(data_url(png_bytes((0, 0, 255)))), img(bare),
                      text("Which colours?")),
    )
    assert resp.choices[0].message.content == "green blue red about which colours?"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == 2 + 30 and resp.usage.completion_tokens == 6
    assert resp.usage.total_tokens == 38
    assert resp.to_dict()["moesaic"] == {"experts": ["colors", "echo"]}
    assert resp.model == "colors" and resp.id.startswith("chatcmpl-")


def test_sdk_streaming_matches_plain_answer_and_names_experts(server, image_server):
    url, _ = server
    messages = user(img(f"{image_server}/red.png"), text("name the colour please"))
    plain = sdk(url).chat.completions.create(model="colors", messages=messages).choices[0].message.content
    chunks = list(sdk(url).chat.completions.create(
        model="colors", messages=messages, stream=True, stream_options={"include_usage": True}))
    deltas = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert deltas == plain == "red about name the colour please"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert finals[0].to_dict()["moesaic"]["experts"] == ["colors", "echo"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


def test_stream_ends_with_done_over_raw_sse(server):
    url, _ = server
    body = {"model": "colors", "stream": True, "messages": [{"role": "user", "content": "hello there"}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]" and all(ln.startswith("data: ") for ln in lines)


def test_image_fetch_does_not_block_the_event_loop(server, image_server):
    url, _ = server
    body = {"model": "colors", "messages": user(img(f"{image_server}/slow/red.png"), text("slow"))}
    with cf.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(chat, url, body)
        time.sleep(0.2)  # the slow fetch is under way
        started = time.perf_counter()
        assert httpx.get(f"{url}/ping").status_code == 200
        assert time.perf_counter() - started < 1.0  # a blocked loop would answer after the 2 s fetch
        assert pending.result().json()["choices"][0]["message"]["content"] == "red about slow"


def test_generation_params_stop_and_max_tokens(server):
    url, _ = server
    client = sdk(url)
    msgs = [{"role": "user", "content": "one two three four five"}]
    short = client.chat.completions.create(model="colors", messages=msgs, max_tokens=3)
    assert short.choices[0].message.content == "about one two" and short.choices[0].finish_reason == "length"
    stopped = client.chat.completions.create(model="colors", messages=msgs, stop=[" three"], temperature=0.7, seed=3)
    assert stopped.choices[0].message.content == "about one two"


def test_models_ping_health_invocations(server, image_server):
    url, _ = server
    assert [m.id for m in sdk(url).models.list().data] == ["colors"]
    ping = httpx.get(f"{url}/ping")
    assert ping.status_code == 200 and ping.content == b""
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    r = httpx.post(f"{url}/invocations", json={"question": "what colour", "image": f"{image_server}/green.png"})
    assert r.status_code == 200
    assert r.json() | {"usage": None} == {"answer": "green about what colour", "model": "colors",
                                          "experts": ["colors", "echo"], "usage": None, "finish_reason": "stop"}
    chat = httpx.post(f"{url}/invocations", json={"messages": user(img(data_url(png_bytes((0, 0, 255)))), text("hi"))})
    assert chat.json()["answer"] == "blue about hi"
    raw = httpx.post(f"{url}/invocations?question=and+this", content=png_bytes((255, 0, 0)),
                     headers={"content-type": "image/png"})
    assert raw.json()["answer"] == "red about and this"
    capped = httpx.post(f"{url}/invocations", json={"question": "a b c d", "max_tokens": 2})
    assert capped.json()["answer"] == "about a" and capped.json()["finish_reason"] == "length"


def expect_error(r: httpx.Response, status: int, code: str, *fragments: str, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == code
    for fragment in fragments:
        assert fragment in err["message"], err["message"]
    if param is not None:
        assert err["param"] == param
    return err


def chat(url: str, body: dict, **kw: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30, **kw)


def test_request_errors_are_openai_shaped_and_server_keeps_serving(server):
    url, _ = server
    expect_error(httpx.get(f"{url}/v2/nothing"), 404, "not_found", "no route /v2/nothing")
    expect_error(httpx.get(f"{url}/v1/chat/completions"), 405, "method_not_allowed")
    expect_error(chat(url, {"model": "colors"}), 400, "invalid_request", "messages", param="messages")
    bad_role = {"model": "colors", "messages": [{"role": "robot", "content": "hi"}]}
    expect_error(chat(url, bad_role), 400, "invalid_request", "messages.0.role", param="messages.0.role")
    expect_error(httpx.post(f"{url}/v1/chat/completions", content=b"{not json"), 400, "invalid_request", "not valid JSON")
    for hostile in (b"[" * 50_000 + b"]" * 50_000, b'{"max_tokens": ' + b"9" * 5000 + b"}"):
        for route in ("/v1/chat/completions", "/invocations"):  # deep nesting (too many values), >4300 digits
            expect_error(httpx.post(f"{url}{route}", content=hostile), 400, "invalid_request", "JSON")
    other = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    expect_error(chat(url, other), 404, "not_found", "'gpt-4o' is not served", param="model")
    expect_error(httpx.post(f"{url}/invocations", json={"image": "abc"}), 400, "invalid_request", "question")
    assert_alive(url)


def test_limits(server):
    url, _ = server
    hi = [{"role": "user", "content": "hi"}]
    expect_error(chat(url, {"model": "colors", "messages": hi, "max_tokens": 65}), 400, "invalid_request",
                 "between 1 and 64", param="max_tokens")
    expect_error(chat(url, {"model": "colors", "messages": hi, "max_tokens": 0}), 400, "invalid_request",
                 "max_tokens", param="max_tokens")
    four = user(*[img(data_url(png_bytes()))] * 4, text("hi"))
    expect_error(chat(url, {"model": "colors", "messages": four}), 400, "invalid_request", "4 images", "at most 3")
    big = user(img(data_url(png_bytes(size=(65, 64)))), text("hi"))
    expect_error(chat(url, {"model": "colors", "messages": big}), 400, "invalid_image")
    long = [{"role": "user", "content": "word " * 50}]
    expect_error(chat(url, {"model": "colors", "messages": long}), 400, "invalid_request", "too long", "limit is 50")
    assert_alive(url)


def test_body_size_refused_by_content_length_and_while_reading(server):
    url, _ = server
    huge = b"x" * 300_000
    r = httpx.post(f"{url}/v1/chat/completions", content=huge, headers={"content-type": "application/json"})
    expect_error(r, 413, "payload_too_large", "300000 bytes", "limit is 200000")

    def chunked():  # no Content-Length: refused while reading
        for _ in range(40):
            yield b"y" * 10_000

    r = httpx.post(f"{url}/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
    expect_error(r, 413, "payload_too_large", "limit is 200000")
    assert_alive(url)


def test_url_policy_and_local_paths(image_server, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    with running(make_app()) as url:  # no --allow-host: loopback image URLs are refused
        r = chat(url, {"model": "colors", "messages": user(img(f"{image_server}/red.png"), text("hi"))})
        expect_error(r, 400, "url_not_allowed")
        for ref in (str(secret), f"file://{secret}"):
            r = chat(url, {"model": "colors", "messages": user(img(ref), text("hi"))})
            assert r.status_code == 400, r.text
            assert "red" not in r.text
        assert_alive(url)


def test_backend_failure_is_500_without_internals(server):
    url, _ = server
    r = chat(url, {"model": "colors", "messages": [{"role": "user", "content": "boom"}]})
    err = expect_error(r, 500, "internal_error", "failed to answer")
    assert "secret" not in r.text and "shard" not in r.text and err["type"] == "server_error"
    with httpx.stream("POST", f"{url}/v1/chat/completions",
                      json={"model": "colors", "stream": True, "messages": [{"role": "user", "content": "boom"}]}) as s:
        lines = [ln for ln in s.iter_lines() if ln]
    assert any('"internal_error"' in ln for ln in lines) and lines[-1] == "data: [DONE]"
    assert "secret" not in "".join(lines)
    assert_alive(url)


def test_full_queue_is_503_with_retry_after():
    backend = ColorBackend(delay_s=1.5)
    with running(make_app(backend, queue_size=1, max_batch_size=1)) as url:
        body = {"model": "colors", "messages": [{"role": "user", "content": "hi"}]}
        with cf.ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda _: chat(url, body), range(4)))
        codes = sorted(r.status_code for r in responses)
        assert 200 in codes and 503 in codes, codes
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["retry-after"] == "1"
        expect_error(refused, 503, "overloaded", "busy", "--queue-size")
        assert_alive(url)


def test_slow_request_is_504():
    with running(make_app(ColorBackend(delay_s=1.0), request_timeout_s=0.2)) as url:
        r = chat(url, {"model": "colors", "messages": [{"role": "user", "content": "hi"}]})
        expect_error(r, 504, "timeout", "longer than 0.2 s")
        assert httpx.get(f"{url}/ping").status_code == 200  # still serving (every answer here takes 1 s)
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == "colors"


def test_api_key():
    with running(make_app(api_key="s3cret")) as url:
        assert httpx.get(f"{url}/ping").status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200
        expect_error(httpx.get(f"{url}/v1/models"), 401, "invalid_api_key", "no API key")
        expect_error(httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer nope"}), 401, "invalid_api_key",
                     "not valid")
        with pytest.raises(openai.AuthenticationError):
            sdk(url, "wrong").models.list()
        out = sdk(url, "s3cret").chat.completions.create(model="colors", messages=[{"role": "user", "content": "ok"}])
        assert out.choices[0].message.content == "about ok"
        r = httpx.post(f"{url}/invocations", json={"question": "x"}, headers={"Authorization": "Bearer s3cret"})
        assert r.json()["answer"] == "about x"


def test_concurrent_requests_share_batched_calls():
    backend = ColorBackend(delay_s=0.3)
    with running(make_app(backend, max_batch_size=8, batch_wait_ms=50)) as url:
        colors = [(255, 0, 0), (0, 160, 0), (0, 0, 255)] * 2
        bodies = [{"model": "colors", "messages": user(img(data_url(png_bytes(c))), text(f"n{i}"))}
                  for i, c in enumerate(colors)]
        with cf.ThreadPoolExecutor(6) as pool:
            answers = [r.json()["choices"][0]["message"]["content"] for r in pool.map(lambda b: chat(url, b), bodies)]
    names = ["red", "green", "blue"] * 2
    assert answers == [f"{n} about n{i}" for i, n in enumerate(names)]
    calls = backend.generate_calls + backend.batch_calls
    assert calls < 6 and max(backend.batch_sizes) >= 2, backend.batch_sizes


def test_stream_disconnect_frees_the_model():
    backend = ColorBackend(delay_s=0.1)
    with running(make_app(backend)) as url:
        body = {"model": "colors", "stream": True, "max_tokens": 200,
                "messages": [{"role": "user", "content": "w " * 80}]}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            seen = 0
            for line in r.iter_lines():
                seen += line.startswith("data: ")
                if seen >= 3:
                    break
        assert backend.streams_closed.wait(5), "the stream kept running after its client left"
        assert backend.stream_chunks_sent < 40
        out = chat(url, {"model": "colors", "messages": [{"role": "user", "content": "next"}]})
        assert out.json()["choices"][0]["message"]["content"] == "about next"


def test_requests_of_clients_that_left_never_reach_the_model():
    backend = ColorBackend(delay_s=1.5)
    with running(make_app(backend, max_batch_size=1)) as url:
        body = {"model": "colors", "messages": [{"role": "user", "content": "first"}]}
        with cf.ThreadPoolExecutor(1) as pool:
            first = pool.submit(chat, url, body)
            deadline = time.monotonic() + 10
            while backend.generate_calls == 0 and time.monotonic() < deadline:
                time.sleep(0.01)  # wait until the first request holds the model
            for route, payload in (("/v1/chat/completions", body), ("/invocations", {"question": "gone"})):
                with pytest.raises(httpx.ReadTimeout):
                    httpx.post(f"{url}{route}", json=payload, timeout=0.15)
            assert first.result().status_code == 200
        time.sleep(0.3)
        assert backend.generate_calls == 1  # the two abandoned requests were dropped from the queue
        assert_alive(url)
        assert backend.generate_calls == 2


def test_metrics_count_requests_tokens_errors(server):
    url, _ = server
    chat(url, {"model": "colors", "messages": [{"role": "user", "content": "count me"}]})
    chat(url, {"model": "colors", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 999})
    text_ = httpx.get(f"{url}/metrics").text
    assert 'moesaic_requests_total{route="/v1/chat/completions",status="200"}' in text_
    assert 'moesaic_errors_total{code="invalid_request"}' in text_
    assert "moesaic_request_latency_seconds_bucket" in text_ and "moesaic_queue_depth" in text_
    completion = next(float(ln.split()[-1]) for ln in text_.splitlines()
                      if ln.startswith('moesaic_tokens_total{kind="completion"}'))
    assert completion >= 3
    batches = next(float(ln.split()[-1]) for ln in text_.splitlines() if ln.startswith("moesaic_batch_size_count"))
    assert batches >= 1
