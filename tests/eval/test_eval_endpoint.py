"""Endpoint models: eval calls /v1/chat/completions through the openai SDK with the image as a data URL."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from moesaic.errors import AuthError, ImageError
from moesaic.eval import EvalConfig, evaluate
from moesaic.eval.answerers import image_data_url


class _FakeOpenAI(BaseHTTPRequestHandler):
    """Answers chat completions with the colour of the image, read back from the data URL's bytes."""

    requests: list[dict[str, object]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeOpenAI.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.headers.get("Authorization") != "Bearer sk-test":
            return self._send(401, {"error": {"message": "bad key", "type": "authentication_error",
                                              "param": None, "code": "invalid_api_key"}})
        url = body["messages"][0]["content"][0]["image_url"]["url"]
        png = base64.b64decode(url.split(",", 1)[1])
        from io import BytesIO

        from PIL import Image

        r, g, b = Image.open(BytesIO(png)).convert("RGB").getpixel((0, 0))
        text = "red" if r > max(g, b) else ("blue" if b > g else "green")
        self._send(200, {
            "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12},
        })

    def _send(self, status: int, payload: dict[str, object]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)  # port 0: the OS picks a free one
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeOpenAI.requests = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_endpoint_model(tmp_path: Path, endpoint: str, qa_dataset: Path, images: dict[str, Path]) -> None:
    config = EvalConfig.validated({
        "models": [{"name": "remote", "endpoint": endpoint, "api_key": "sk-test", "endpoint_model": "tiny-moe",
                    "price_per_hour": 2.0}],
        "datasets": [{"name": "qa", "path": str(qa_dataset)}],
        "out": str(tmp_path / "out"),
        "generation": {"max_new_tokens": 5, "seed": 3},
    })
    result = evaluate(config)
    m = result.models[0]
    assert m.kind == "endpoint" and m.model_calls == 3 and m.peak_rss_mb is None
    qa = m.datasets[0]
    # answers red, blue, green: same hand-computed values as the local "colour" model
    assert qa.metrics["normalized_match"] == pytest.approx(2 / 3)
    assert qa.metrics["anls"] == pytest.approx(17 / 18)
    assert m.tokens_per_s == pytest.approx(3 / (m.latency_mean_s * 3))
    assert m.cost_per_1k == pytest.approx(2.0 * m.latency_mean_s * 1000 / 3600)
    first = _FakeOpenAI.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    body = first["body"]
    assert body["model"] == "tiny-moe" and body["max_tokens"] == 5 and body["seed"] == 3
    parts = body["messages"][0]["content"]
    assert parts[1] == {"type": "text", "text": "What colour is it?"}
    expected_url = "data:image/png;base64," + base64.b64encode(images["red"].read_bytes()).decode()
    assert parts[0]["image_url"]["url"] == expected_url
    # the key never reaches the artefacts
    out = tmp_path / "out"
    assert all("sk-test" not in (out / f).read_text() for f in ("moesaic_config.yaml", "results.json", "cache.jsonl"))
    # cached on re-run: the server sees no new request
    again = evaluate(config)
    assert again.cache_hits == 3 and len(_FakeOpenAI.requests) == 3 + 1  # + one warm-up request


def test_endpoint_bad_key_is_an_auth_error(tmp_path: Path, endpoint: str, qa_dataset: Path) -> None:
    config = EvalConfig.validated({
        "models": [{"name": "remote", "endpoint": endpoint, "api_key": "wrong"}],
        "datasets": [{"name": "qa", "path": str(qa_dataset)}],
        "out": str(tmp_path / "out"),
    })
    with pytest.raises(AuthError, match="model 'remote', dataset 'qa', sample 'r': .* rejected the API key"):
        evaluate(config)


def test_image_data_url_forms(images: dict[str, Path]) -> None:
    raw = images["blue"].read_bytes()
    b64 = base64.b64encode(raw).decode()
    assert image_data_url(str(images["blue"])) == f"data:image/png;base64,{b64}"
    assert image_data_url(b64) == f"data:image/png;base64,{b64}"
    assert image_data_url("https://example.com/x.jpg") == "https://example.com/x.jpg"
    assert image_data_url(f"data:image/png;base64,{b64}").endswith(b64)
    with pytest.raises(ImageError, match="no image file"):
        image_data_url(str(images["blue"].parent / "nope.png"))
