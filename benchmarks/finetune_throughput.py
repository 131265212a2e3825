"""LoRA fine-tuning throughput: moesaic's loop vs TRL's SFTTrainer, same tiny VLM, same data, same run.

Each trainer runs in its own subprocess (so peak RSS is its own): the same saved tiny model
(``moesaic.testing.make_tiny_model``, seed 0), the same synthetic images and answers, the same LoRA layers
(moesaic's 'all-linear' list, passed to TRL explicitly), batch size, steps, learning rate and seed; loss only on
the answer in both (TRL: prompt-completion data with ``completion_only_loss``). Reported: training samples/s
(the optimisation loop only, from each trainer's own timer), end-to-end seconds (model load, data
preparation, saving), peak RSS, and the mean training loss over the run (both should be similar).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/finetune_throughput.py [--family idefics3] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 0
QUESTION = "What colour is the shape?"
COLOURS = ("red", "green", "blue")


def make_data(folder: Path, n: int, size: int) -> list[tuple[str, str]]:
    from PIL import Image, ImageDraw

    rng = random.Random(SEED)
    rows = []
    for i in range(n):
        colour = COLOURS[i % 3]
        img = Image.new("RGB", (size, size), "white")
        x = rng.randint(0, size // 3)
        ImageDraw.Draw(img).rectangle([x, x, x + size // 2, x + size // 2], fill=colour)
        img.save(folder / f"{i}.png")
        rows.append((str(folder / f"{i}.png"), colour))
    (folder / "data.jsonl").write_text("".join(
        json.dumps({"image": p, "question": QUESTION, "answer": a}) + "\n" for p, a in rows))
    return rows


def run_moesaic(args: argparse.Namespace, work: Path) -> dict:
    import accelerate  # noqa: F401  (imports outside the timed span, as for TRL)
    import peft  # noqa: F401

    from moesaic.finetune.config import FinetuneConfig
    from moesaic.finetune.train import finetune

    t0 = time.perf_counter()
    config = FinetuneConfig(base_model=str(work / "model"), data=str(work / "data/data.jsonl"),
                            output_dir=str(work / "out-moesaic"), method="lora", lora={"rank": 8, "alpha": 16},
                            lr=args.lr, max_steps=args.steps, batch_size=args.batch, eval_fraction=0.0,
                            eval_generate=False, seed=SEED, scheduler="constant", resume=False)
    result = finetune(config)
    log = [json.loads(x) for x in (work / "out-moesaic/metrics.jsonl").read_text().splitlines()]
    assert result.steps == args.steps
    return {"train_s": log[-1]["elapsed_s"], "total_s": time.perf_counter() - t0,
            "mean_loss": sum(r["loss"] for r in log) / len(log)}


def run_trl(args: argparse.Namespace, work: Path) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from PIL import Image
    from trl import SFTConfig, SFTTrainer

    from moesaic.finetune.model import load_model, load_processor, lora_targets

    t0 = time.perf_counter()
    processor = load_processor(work / "model")
    model = load_model(work / "model")
    rows = [json.loads(x) for x in (work / "data/data.jsonl").read_text().splitlines()]
    data = Dataset.from_list([{
        "images": [Image.open(r["image"]).convert("RGB")],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}],
        "completion": [{"role": "assistant", "content": [{"type": "text", "text": r["answer"]}]}],
    } for r in rows])
    peft = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=lora_targets(model, "all-linear", False))
    config = SFTConfig(output_dir=str(work / "out-trl"), per_device_train_batch_size=args.batch, max_steps=args.steps,
                       learning_rate=args.lr, lr_scheduler_type="constant", seed=SEED, save_strategy="no",
                       report_to=[], max_length=None, completion_only_loss=True, logging_steps=args.steps,
                       use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, max_grad_norm=1.0)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=processor, peft_config=peft)
    out = trainer.train()
    return {"train_s": out.metrics["train_runtime"], "total_s": time.perf_counter() - t0,
            "mean_loss": out.metrics.get("train_loss")}  # TRL's train_loss: mean over all steps


def worker(args: argparse.Namespace) -> None:
    work = Path(args.work)
    stats = (run_moesaic if args.worker == "moesaic" else run_trl)(args, work)
    stats["samples_per_s"] = args.steps * args.batch / stats["train_s"]
    stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(stats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="idefics3", choices=["idefics3", "qwen3_vl", "llava"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--worker", choices=["moesaic", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    from moesaic.testing import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_tiny_model(args.family, work / "model", seed=SEED)
        (work / "data").mkdir()
        make_data(work / "data", args.samples, args.image_size)
        results = {}
        for name in ("moesaic", "trl"):
            cmd = [sys.executable, __file__, "--worker", name, "--work", str(work), "--steps", str(args.steps),
                   "--batch", str(args.batch), "--lr", str(args.lr)]
            env = {**os.environ, "MOESAIC_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
            results[name] = json.loads(line[-1][7:])
    print(f"\nLoRA fine-tuning, tiny {args.family}, {args.steps} steps x batch {args.batch}, "
          f"{args.image_size}px images, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}\n")
    print(f"{'trainer':<10} {'samples/s':>10} {'train s':>9} {'total s':>9} {'peak RSS MB':>12} {'mean loss':>10}")
    for name, r in results.items():
        print(f"{name:<10} {r['samples_per_s']:>10.1f} {r['train_s']:>9.2f} {r['total_s']:>9.2f} "
              f"{r['peak_rss_mb']:>12.0f} {r['mean_loss'] if r['mean_loss'] is not None else float('nan'):>10.4f}")
    m, t = results["moesaic"], results["trl"]
    print(f"\nmoesaic / TRL: {m['samples_per_s'] / t['samples_per_s']:.2f}x samples/s, "
          f"{m['peak_rss_mb'] / t['peak_rss_mb']:.2f}x peak RSS")


if __name__ == "__main__":
    main()
