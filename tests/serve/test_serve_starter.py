"""The default model: ``moesaic serve`` with no --model serves the offline starter experts, and the
experts that answered reach the client (JSON field and the final SSE chunk)."""

from __future__ import annotations

import io

import httpx
import pytest
from serve_helpers import data_url, running

from moesaic.serve.app import create_app
from moesaic.serve.settings import ServeConfig

pytest.importorskip("moesaic.experts.backend")
skdata = pytest.importorskip("skimage.data")


def jpeg(array) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_default_server_answers_with_the_starter_experts():
    app = create_app(ServeConfig())  # what `moesaic serve` builds: model "starter", port 8080 settings
    coffee = data_url(jpeg(skdata.coffee()), "image/jpeg")
    with running(app) as url:
        assert httpx.get(f"{url}/v1/models").json()["data"][0]["id"] == "starter"
        r = httpx.post(f"{url}/invocations", json={"question": "What is this?", "image": coffee}, timeout=120)
        assert r.status_code == 200, r.text
        body = r.json()
        assert any(word in body["answer"].lower() for word in ("espresso", "coffee", "cup"))
        assert "tagger" in body["experts"] and body["model"] == "starter"
        chat = {"model": "starter", "stream": True, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": coffee}}, {"type": "text", "text": "What colour is it?"}]}]}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat, timeout=120) as s:
            lines = [ln for ln in s.iter_lines() if ln.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        final = next(ln for ln in lines if '"finish_reason"' in ln)
        assert '"colors"' in final  # the colour expert answered a colour question
