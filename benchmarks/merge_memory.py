"""Merge time and peak memory: ``moesaic merge`` (streaming writer) vs ``mergekit-moe`` 0.1.5.

Four experts of a SmolLM2-135M-shaped Llama with random weights (hidden 576, 30 layers, intermediate
1536, 9 heads / 3 kv heads, vocab 49152, tied embeddings, bfloat16), each the base plus noise in every
MLP, merged into a Mixtral with the same YAML (mergekit-moe's keys) by both tools, each run as its own
CLI process (``python -m moesaic.cli merge`` and ``mergekit-moe --device cpu``). Time is wall-clock of the
process and peak RSS its maximum resident set size, both from GNU ``/usr/bin/time -f "%e %M"``.
Output size is the bytes of the written ``*.safetensors``. Fixed seed; gate modes ``hidden`` (both
tools load the base to read prompt hidden states) and ``random``.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/merge_memory.py --work /tmp/merge-bench

Prints one table and the ratios moesaic / mergekit.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
             num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True)
PROMPTS = [["Solve 12 + 35 and explain the steps."], ["Write a short poem about the sea."],
           ["Translate 'good morning' into French."], ["What is the capital of Japan?"]]


def build_models(work: Path, num_experts: int, seed: int) -> tuple[Path, list[Path]]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from moesaic.testing import tiny_processor
    from moesaic.testing.tokenizers import CHAT_TEMPLATES

    tok = tiny_processor("llava").tokenizer  # byte-level BPE: token ids stay below the vocab
    tok.chat_template = CHAT_TEMPLATES["llava"]
    torch.manual_seed(seed)
    base = LlamaForCausalLM(LlamaConfig(**SHAPE)).to(torch.bfloat16).eval()
    paths = []
    for e in range(num_experts + 1):
        out = work / ("base" if e == 0 else f"expert{e}")
        if not out.exists():
            model = base if e == 0 else _noisy_copy(base, seed + e)
            model.save_pretrained(out)
            tok.save_pretrained(out)
        paths.append(out)
    return paths[0], paths[1:]


def _noisy_copy(base, seed: int):  # type: ignore[no-untyped-def]
    import copy

    import torch

    model = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.model.layers:
            for p in layer.mlp.parameters():
                p.add_((torch.randn(p.shape, generator=gen) * 0.02).to(p.dtype))
    return model


def run(cmd: list[str], work: Path) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one child process, measured by GNU time (``%e``, ``%M``).

    Not ``os.wait4``'s ru_maxrss: a child forked from this process (which built the models) starts with
    this process's resident pages counted, until it execs."""
    stats = work / "time.txt"
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", str(stats), *cmd], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    seconds, kib = stats.read_text().split()[-2:]
    return float(seconds), int(kib) / 1024


def size_mib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/merge-bench"))
    ap.add_argument("--experts", type=int, default=4)
    ap.add_argument("--gate-modes", nargs="+", default=["hidden", "random"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    base, experts = build_models(args.work, args.experts, args.seed)
    bin_dir = Path(sys.executable).parent
    rows = []
    for mode in args.gate_modes:
        recipe = {"base_model": str(base), "gate_mode": mode, "dtype": "bfloat16", "experts_per_token": 2,
                  "experts": [{"source_model": str(e), "positive_prompts": PROMPTS[i % len(PROMPTS)]}
                              for i, e in enumerate(experts)]}
        cfg = args.work / f"moe-{mode}.yaml"
        cfg.write_text(yaml.safe_dump(recipe))
        for tool in ("moesaic", "mergekit"):
            out = args.work / f"out-{tool}-{mode}"
            shutil.rmtree(out, ignore_errors=True)
            if tool == "moesaic":
                cmd = [sys.executable, "-m", "moesaic.cli", "merge", str(cfg), "--out", str(out)]
            else:
                cmd = [str(bin_dir / "mergekit-moe"), str(cfg), str(out), "--device", "cpu", "--quiet",
                       "--i-understand-this-is-not-useful-without-training"]
            seconds, rss = run(cmd, args.work)
            rows.append((mode, tool, seconds, rss, size_mib(out)))
    print(f"{'gate':8} {'tool':9} {'seconds':>8} {'peak RSS MiB':>13} {'output MiB':>11} {'RSS/output':>11}")
    for mode, tool, seconds, rss, size in rows:
        print(f"{mode:8} {tool:9} {seconds:8.1f} {rss:13.0f} {size:11.0f} {rss / size:11.2f}")
    for mode in args.gate_modes:
        ours = next(r for r in rows if r[0] == mode and r[1] == "moesaic")
        peer = next(r for r in rows if r[0] == mode and r[1] == "mergekit")
        print(f"{mode}: moesaic speed {peer[2] / ours[2]:.2f}x mergekit's; peak RSS {ours[3] / peer[3]:.2f}x mergekit's")


if __name__ == "__main__":
    main()
