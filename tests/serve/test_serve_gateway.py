"""``moesaic serve --upstream``: the gateway in front of a real OpenAI-compatible engine.

The acceptance checks run against ``transformers serve`` on a tiny saved Idefics3 folder (a child process;
marked slow for its start-up). What that engine cannot show (the bytes it received, when its client left, how
it fails) is checked against :class:`moesaic.testing.engines.RecordingEngine`, a small real HTTP engine.
"""

from __future__ import annotations

import base64
import io
import time

import httpx
import pytest
from PIL import Image
from serve_helpers import data_url, png_bytes, running

from moesaic.backends.upstream import folder_image_side, fit_within, upstream_error
from moesaic.serve.app import create_app
from moesaic.serve.settings import ServeConfig
from moesaic.testing.engines import RecordingEngine, free_port, transformers_serve


def gateway(upstream: str, **kw: object):
    return create_app(ServeConfig(upstream=upstream, **{"model": "tiny", **kw}))


def jpeg_b64(size=(640, 480), color=(200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def engine():
    rec = RecordingEngine()
    with running(rec.app()) as url:
        rec.url = url
        yield rec


# ----- against the recording engine ---------------------------------------------------------------
def test_images_reach_the_engine_decoded_and_shrunk(engine):
    with running(gateway(engine.url + "/v1", image_side=32, upstream_api_key="eng-key", api_key="client")) as url:
        r = httpx.post(f"{url}/invocations", json={"question": "Colour?", "image": jpeg_b64(), "max_tokens": 3,
                                                   "stop": ["zz"], "seed": 3},
                       headers={"Authorization": "Bearer client"})
    assert r.status_code == 200, r.text
    assert r.json()["answer"] == "a red square" and r.json()["usage"]["completion_tokens"] == 3
    (body,) = engine.bodies
    assert engine.keys == ["Bearer eng-key"]  # the engine's key, never the client's
    assert body["model"] == "tiny" and body["max_tokens"] == 3 and body["stop"] == ["zz"] and body["seed"] == 3
    image_part, text_part = body["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "Colour?"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == (32, 24) and sent.getpixel((16, 12))[0] > 150  # 640x480 → longest side 32


def test_private_and_metadata_image_urls_are_refused_without_contact(engine):
    with running(gateway(engine.url)) as url:
        for ref in (f"{engine.url}/img.png", "http://169.254.169.254/latest/meta-data/x.png",
                    "http://localhost/x.png"):
            r = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": ref}}, {"type": "text", "text": "hi"}]}]})
            assert r.status_code == 400 and r.json()["error"]["code"] == "url_not_allowed", r.text
        r = httpx.post(f"{url}/invocations", json={"question": "hi", "image": "/etc/passwd"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "url_not_allowed"
    assert engine.image_hits == 0 and engine.bodies == []  # nothing reached the engine or the image URL


@pytest.mark.parametrize(("status", "code", "shown"), [
    (400, "invalid_request", "too long: 9000 tokens"),
    (401, "upstream_error", "refused the gateway's key"),
    (404, "upstream_error", "pass --model exactly"),
    (429, "overloaded", "busy"),
    (500, "upstream_error", "failed (500)"),
])
def test_engine_errors_become_ours(engine, status, code, shown):
    engine.fail = (status, {"error": {"message": "too long: 9000 tokens /srv/secret"}})
    want = {400: 400, 401: 502, 404: 502, 429: 503, 500: 502}[status]
    with running(gateway(engine.url)) as url:
        for stream in (False, True):
            r = httpx.post(f"{url}/v1/chat/completions",
                           json={"model": "tiny", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == want and r.json()["error"]["code"] == code, r.text
            assert shown in r.json()["error"]["message"]
            assert ("/srv/secret" in r.text) == (status == 400)  # engine internals only for the client's fault


def test_engine_down_is_503_with_a_clear_body(engine):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with running(gateway(dead)) as url:
        assert httpx.get(f"{url}/ping").status_code == 503
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and health.json()["status"] == "upstream_down"
        assert "cannot reach the engine" in health.json()["upstream"]["error"]
        r = httpx.post(f"{url}/invocations", json={"question": "hi"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"
        assert r.headers["Retry-After"] == "1" and "cannot be reached" in r.json()["error"]["message"]
    with running(gateway(engine.url)) as url:
        assert httpx.get(f"{url}/ping").status_code == 200
        assert httpx.get(f"{url}/health").json()["upstream"]["status"] == "ok"
        engine.healthy = False
        time.sleep(1.1)  # past the health cache
        assert httpx.get(f"{url}/ping").status_code == 503


def test_client_leaving_mid_stream_cancels_the_engine_request():
    rec = RecordingEngine(reply=" ".join(f"w{i}" for i in range(60)), delay_s=0.05)
    with running(rec.app()) as engine_url, running(gateway(engine_url)) as url:
        body = {"model": "tiny", "stream": True, "messages": [{"role": "user", "content": "count"}]}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            seen = [line for _, line in zip(range(6), r.iter_lines())]
        assert any("w0" in line for line in seen)
        assert rec.stream_closed.wait(10), "the engine kept streaming after the client left"
        assert rec.chunks_sent < 60
        deadline = time.monotonic() + 5
        while httpx.get(f"{url}/health").json()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{url}/health").json()["in_flight"] == 0


def test_stream_is_relayed_in_our_shape(engine):
    with running(gateway(engine.url)) as url:
        body = {"model": "tiny", "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "hi"}]}
        lines = [line for line in httpx.post(f"{url}/v1/chat/completions", json=body).text.splitlines() if line]
    assert lines[-1] == "data: [DONE]"
    assert '"content":"a"' in lines[1] and '"content":" red"' in lines[2] and '"moesaic":{"experts":[]}' in lines[-3]
    assert '"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}' in lines[-2]


def test_image_side_and_shrinking(tiny_model_dir):
    assert folder_image_side(str(tiny_model_dir("idefics3"))) == 32
    assert folder_image_side("HuggingFaceTB/SmolVLM-256M-Instruct") is None
    small = Image.new("RGB", (20, 10))
    assert fit_within(small, 32) is small and fit_within(Image.new("RGB", (100, 400)), 32).size == (8, 32)
    assert upstream_error(422, b"not json", "http://e").status == 400


def _stream_text(url: str, body: dict) -> str:
    import json

    with httpx.stream("POST", url, json=body, timeout=60) as r:
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:") and "[DONE]" not in line]
    return "".join(c["delta"].get("content") or "" for e in events for c in e.get("choices", []))


# ----- against transformers serve ----------------------------------------------------------------
@pytest.fixture(scope="module")
def transformers_engine(tiny_model_dir, tmp_path_factory):
    folder = tiny_model_dir("idefics3")
    with transformers_serve(folder, log=tmp_path_factory.mktemp("engine") / "serve.log") as url:
        yield url, str(folder)


@pytest.mark.slow
def test_openai_sdk_and_invocations_through_transformers_serve(transformers_engine):
    openai = pytest.importorskip("openai")
    engine_url, folder = transformers_engine
    image = data_url(png_bytes((255, 0, 0), (32, 32)))
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}},
                                             {"type": "text", "text": "What colour?"}]}]
    ask = {"model": folder, "messages": messages, "max_tokens": 6, "temperature": 0}
    direct = httpx.post(f"{engine_url}/v1/chat/completions", json=ask, timeout=60).json()
    direct_stream = _stream_text(f"{engine_url}/v1/chat/completions", ask | {"stream": True})
    with running(create_app(ServeConfig(upstream=engine_url + "/v1", model=folder, api_key="k"))) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k")
        plain = client.chat.completions.create(model=folder, messages=messages, max_tokens=6)
        assert plain.choices[0].message.content == direct["choices"][0]["message"]["content"]
        assert plain.usage.prompt_tokens == direct["usage"]["prompt_tokens"] > 20  # the image's tokens included
        pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model=folder, messages=messages, max_tokens=6, stream=True) if c.choices]
        # the tiny random model emits byte-level garbage: a streamed split UTF-8 character decodes
        # differently from the whole answer, in the engine itself too; so compare stream with stream
        assert "".join(pieces) == direct_stream and len(pieces) >= 2
        bare = base64.b64encode(png_bytes((255, 0, 0), (32, 32))).decode()
        sm = httpx.post(f"{url}/invocations", json={"question": "What colour?", "image": bare, "max_tokens": 6},
                        headers={"Authorization": "Bearer k"}, timeout=60)
        assert sm.status_code == 200 and sm.json()["answer"] == plain.choices[0].message.content
        assert httpx.get(f"{url}/ping").status_code == 200
        assert httpx.get(f"{url}/health").json()["upstream"]["status"] == "ok"
        assert "moesaic_requests_total" in httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer k"}).text
        assert httpx.get(f"{url}/").status_code == 200
        with pytest.raises(openai.BadRequestError, match="loopback|private|not allowed"):
            client.chat.completions.create(model=folder, max_tokens=2, messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": f"{engine_url}/v1/models"}}]}])


def test_blocking_backend_for_the_python_api(engine):
    from moesaic.backends.base import GenerationParams
    from moesaic.backends.upstream import UpstreamBackend, UpstreamConfig
    from moesaic.inputs.messages import question_messages, resolve_messages

    backend = UpstreamBackend(UpstreamConfig(url=engine.url, model="tiny", image_side=16))
    turns = resolve_messages(question_messages("Colour?", [data_url(png_bytes((0, 0, 255), (64, 64)))]))
    answer = backend.generate(turns, GenerationParams(max_new_tokens=2))
    assert answer.text == "a red" and answer.completion_tokens == 2 and answer.model == "tiny"
    chunks = list(backend.stream(turns, GenerationParams(max_new_tokens=3)))
    assert "".join(c.text for c in chunks) == "a red square" and chunks[-1].answer.text == "a red square"
    sent = engine.bodies[0]["messages"][0]["content"][0]["image_url"]["url"]
    assert Image.open(io.BytesIO(base64.b64decode(sent.split(",", 1)[1]))).size == (16, 16)
    backend.close()
