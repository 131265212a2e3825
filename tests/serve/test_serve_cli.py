"""``moesaic serve`` as users start it: a subprocess on a free port, SageMaker routes, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from serve_helpers import data_url, png_bytes

from moesaic.backends.base import GenerationParams
from moesaic.inputs.messages import resolve_messages

pytest.importorskip("moesaic.backends.hf")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_cli_serves_a_model_folder_until_interrupted(tmp_path):
    from moesaic.backends.registry import load_backend
    from moesaic.inputs.messages import question_messages
    from moesaic.testing import make_tiny_model

    folder = make_tiny_model("idefics3", tmp_path / "tiny")
    image = data_url(png_bytes((0, 160, 0)))
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MOESAIC_API_KEY": "cli-key"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moesaic.cli", "serve", "--model", str(folder), "--port", str(port),
         "--served-model-name", "tiny", "--max-images", "2", "--allow-host", "127.0.0.1,10.0.0.0/8",
         "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /ping in time"
            time.sleep(0.3)
        body = {"question": "what is it?", "image": image, "max_tokens": 5}
        assert httpx.post(f"{base}/invocations", json=body).status_code == 401  # key from $MOESAIC_API_KEY
        r = httpx.post(f"{base}/invocations", json=body, headers={"Authorization": "Bearer cli-key"}, timeout=60)
        assert r.status_code == 200 and r.json()["model"] == "tiny"
        direct = load_backend(str(folder)).generate(
            resolve_messages(question_messages("what is it?", [image])), GenerationParams(max_new_tokens=5))
        assert r.json()["answer"] == direct.text
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
