"""Serve-test helpers (imported by the tests as ``serve_helpers``): a real uvicorn server on a free loopback port, a loopback image server, and a
small deterministic backend (a real :class:`~moesaic.backends.base.Backend` subclass, not a mock)."""

from __future__ import annotations

import base64
import http.server
import io
import threading
import time
from collections.abc import Iterator

from PIL import Image

from moesaic.backends.base import Answer, Backend, GenerationParams, StreamChunk, apply_stop
from moesaic.inputs.messages import Turn
from moesaic.testing.server import running  # noqa: F401 - re-exported for the tests

COLORS = {"red": (255, 0, 0), "green": (0, 160, 0), "blue": (0, 0, 255)}


def png_bytes(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode("ascii")


def nearest_color(image: Image.Image) -> str:
    r, g, b = image.convert("RGB").resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
    return min(COLORS, key=lambda n: sum((a - c) ** 2 for a, c in zip(COLORS[n], (r, g, b), strict=True)))


class ColorBackend(Backend):
    """Names each image's colour and echoes the question; counts its calls; can be slowed or made to fail."""

    name = "colors"
    can_batch = True
    can_stream = True
    max_images = None

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.generate_calls = 0
        self.batch_calls = 0
        self.batch_sizes: list[int] = []
        self.streams_started = 0
        self.stream_chunks_sent = 0
        self.streams_closed = threading.Event()
        self.closed = False

    def _answer(self, prompt: list[Turn], params: GenerationParams) -> Answer:
        text = " ".join(t.text for t in prompt if t.role == "user")
        if "boom" in text:
            raise RuntimeError("secret internal detail: /opt/weights/shard-3 is corrupt")
        images = [img for t in prompt for img in t.images]
        words = [nearest_color(img) for img in images] + ["about", *text.lower().split()]
        out = " ".join(words[: params.max_new_tokens])
        out, cut = apply_stop(out, params.stop)
        finish = "length" if len(words) > params.max_new_tokens and not cut else "stop"
        return Answer(text=out, model=self.name, prompt_tokens=len(text.split()) + 10 * len(images),
                      completion_tokens=len(out.split()), finish_reason=finish, experts=["colors", "echo"])

    def generate(self, prompt: list[Turn], params: GenerationParams | None = None) -> Answer:
        self.generate_calls += 1
        self.batch_sizes.append(1)
        time.sleep(self.delay_s)
        return self._answer(prompt, params or GenerationParams())

    def generate_batch(self, prompts: list[list[Turn]], params: GenerationParams | None = None) -> list[Answer]:
        self.batch_calls += 1
        self.batch_sizes.append(len(prompts))
        time.sleep(self.delay_s)
        return [self._answer(p, params or GenerationParams()) for p in prompts]

    def stream(self, prompt: list[Turn], params: GenerationParams | None = None) -> Iterator[StreamChunk]:
        self.streams_started += 1
        answer = self._answer(prompt, params or GenerationParams())
        try:
            for i, word in enumerate(answer.text.split(" ")):
                time.sleep(self.delay_s)
                self.stream_chunks_sent += 1
                yield StreamChunk(text=word if i == 0 else " " + word)
            yield StreamChunk(answer=answer)
        finally:
            self.streams_closed.set()

    def close(self) -> None:
        self.closed = True


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/slow/"):  # answers after a pause: image fetches must not block the server
            time.sleep(2.0)
            self.path = self.path[len("/slow"):]
        body = self.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def start_image_server() -> tuple[http.server.ThreadingHTTPServer, str]:
    """A loopback HTTP server serving /red.png, /green.png, /blue.png (and /slow/… after 2 s)."""
    handler = type("Handler", (_ImageHandler,), {"files": {f"/{n}.png": png_bytes(c) for n, c in COLORS.items()}})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
