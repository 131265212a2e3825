"""GPU check of ``--engine vllm`` and the experimental vLLM plugin (NOT RUN YET: needs a CUDA machine with vLLM).

For each of two tiny MoE VLMs written in the on-disk format moesaic's merges produce (random weights, seeded):

* ``idefics3-mixtral``: an Idefics3/SmolVLM-shaped model whose ``text_config`` is Mixtral (needs the plugin);
* ``llava-mixtral``: LLaVA with a Mixtral text model (vLLM builds it from ``text_config`` by itself),

it starts ``moesaic serve --engine vllm`` (vLLM as a child behind the gateway, float32, greedy), sends the same
image+question requests through the gateway and to moesaic's HF backend in this process, and compares the
greedy answers. Prints a table; exits 1 when any answer differs or a server fails.

Setup on the GPU machine (vLLM and moesaic in one environment, so vLLM finds the plugin's entry point):

    pip install vllm==0.32.0 && pip install -e '.[serve]'
    python benchmarks/vllm_gpu_check.py --out runs/vllm_gpu_check   # sized for < 10 min: two vLLM start-ups
                                                                   # (270 s cap each) and 8 short requests

Tiny models need a head size vLLM's attention kernels take (64 here).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MODELS = {
    "idefics3-mixtral": ("idefics3", "needs moesaic's plugin"),
    "llava-mixtral": ("llava", "vLLM builds text from text_config"),
}
TEXT = {"model_type": "mixtral", "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 64, "num_local_experts": 4, "num_experts_per_tok": 2}
QUESTIONS = ["What colour is it?", "Describe the image.", "Is there a square?", "Name one thing."]
COLORS = [(255, 0, 0), (0, 160, 0), (0, 0, 255), (240, 200, 20)]


def images() -> list[str]:
    from PIL import Image

    out = []
    for color in COLORS:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), color).save(buf, format="PNG")
        out.append(base64.b64encode(buf.getvalue()).decode())
    return out


def build(name: str, family: str, root: Path) -> Path:
    from moesaic.testing import make_tiny_model

    folder = root / name
    if not (folder / "config.json").is_file():
        make_tiny_model(family, folder, seed=0, **TEXT)
    return folder


def hf_answers(folder: Path, bare: list[str], max_tokens: int) -> list[str]:
    from moesaic.backends.base import GenerationParams
    from moesaic.backends.registry import load_backend
    from moesaic.inputs.messages import question_messages, resolve_messages

    backend = load_backend(str(folder))
    params = GenerationParams(max_new_tokens=max_tokens)
    return [backend.generate(resolve_messages(question_messages(q, [img])), params).text
            for q, img in zip(QUESTIONS, bare, strict=True)]


def gateway_answers(folder: Path, bare: list[str], max_tokens: int, log: Path) -> tuple[list[str], float]:
    import httpx

    port = 18000 + os.getpid() % 1000
    cmd = [sys.executable, "-m", "moesaic.cli", "serve", "--engine", "vllm", "--model", str(folder),
           "--port", str(port), "--dtype", "float32", "--vllm-args=--max-model-len 512 --enforce-eager"]
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moesaic serve --engine vllm exited with {proc.returncode}; see {log}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > 270:
                raise RuntimeError(f"not healthy within 270 s; see {log}")
            time.sleep(1)
        ready_s = time.monotonic() - started
        answers = []
        for q, img in zip(QUESTIONS, bare, strict=True):
            r = httpx.post(f"http://127.0.0.1:{port}/invocations", timeout=120,
                           json={"question": q, "image": img, "max_tokens": max_tokens, "temperature": 0})
            r.raise_for_status()
            answers.append(r.json()["answer"])
        return answers, ready_s
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/vllm_gpu_check"))
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bare = images()
    rows, failed = [], False
    for name, (family, note) in MODELS.items():
        folder = build(name, family, args.out)
        expected = hf_answers(folder, bare, args.max_tokens)
        try:
            got, ready_s = gateway_answers(folder, bare, args.max_tokens, args.out / f"{name}.log")
            same = sum(a.strip() == b.strip() for a, b in zip(got, expected, strict=True))
            rows.append({"model": name, "note": note, "ready_s": round(ready_s, 1), "equal": f"{same}/{len(got)}",
                         "vllm": got, "hf": expected})
            failed |= same != len(got)
        except Exception as exc:  # noqa: BLE001 - report every model, then fail
            rows.append({"model": name, "note": note, "error": str(exc)})
            failed = True
    (args.out / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"{'model':18} {'text model':34} {'ready s':>8} {'greedy answers equal':>22}")
    for row in rows:
        print(f"{row['model']:18} {row['note']:34} {row.get('ready_s', '-')!s:>8} "
              f"{row.get('equal', 'ERROR: ' + row.get('error', ''))!s:>22}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
