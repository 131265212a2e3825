"""QLoRA memory and speed: moesaic QLoRA vs moesaic LoRA vs TRL's SFTTrainer QLoRA, one SmolVLM-256M-shaped model.

The model is random but has SmolVLM-256M-Instruct's shapes (Idefics3: SigLIP-style vision tower, hidden 768,
12 layers, patch 16, 512 px positions; pixel-shuffle 4; Llama text, hidden 576, 30 layers, 9/3 heads, MLP 1536,
vocabulary 49,280, untied LM head), saved in bfloat16 like the real checkpoint. Images are ``--image-size`` px
(512 is what SmolVLM sees; smaller keeps a CPU run short; the model is the same).

Each trainer runs in its own subprocess, so its peak RSS is its own (``VmHWM`` of /proc/self/status: unlike
``ru_maxrss``, it does not inherit the parent's peak across fork + exec): the same data, LoRA layers
(moesaic's 'all-linear' list, vision tower excluded), rank, batch, steps, learning rate and seed.
- ``lora``: ``moesaic finetune`` with ``method: lora`` (float32 base, as moesaic loads it).
- ``qlora``: ``method: qlora`` (NF4, double quantisation, float32 compute, gradient checkpointing).
- ``trl-qlora``: TRL ``SFTTrainer`` on the base loaded with the same ``BitsAndBytesConfig``, gradient
  checkpointing on, loss on the completion only.
Reported: training samples/s (each trainer's own timer over the optimisation loop), peak RSS, the RSS after
imports (before any weights: what the process costs anyway) and the mean training loss.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/qlora_memory.py [--steps 6] [--batch 2] [--image-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from finetune_throughput import SEED, make_data  # noqa: E402  (same synthetic data as the LoRA benchmark)

TEXT = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49280, "max_position_embeddings": 8192,
        "rope_theta": 100000.0}
VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
          "image_size": 512, "patch_size": 16}
RANK, ALPHA = 8, 16


def make_model(folder: Path, image_size: int) -> int:
    """Save the SmolVLM-256M-shaped random model (bfloat16) and a processor for ``image_size`` px images."""
    import torch
    from transformers import AutoModelForImageTextToText, Idefics3ImageProcessorPil, Idefics3Processor

    from moesaic.testing.tiny import tiny_config, tiny_processor

    config = tiny_config("idefics3", **TEXT)
    for key, value in VISION.items():
        setattr(config.vision_config, key, value)
    config.scale_factor = 4
    torch.manual_seed(SEED)
    model = AutoModelForImageTextToText.from_config(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    small = tiny_processor("idefics3")
    images = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": image_size},
                                       max_image_size={"longest_edge": image_size})
    seq_len = (image_size // VISION["patch_size"]) ** 2 // config.scale_factor ** 2
    Idefics3Processor(images, small.tokenizer, image_seq_len=seq_len,
                      chat_template=small.chat_template).save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def run_moesaic(args: argparse.Namespace, work: Path, method: str) -> dict:
    from moesaic.finetune.config import FinetuneConfig
    from moesaic.finetune.train import finetune

    out = work / f"out-{method}"
    config = FinetuneConfig(base_model=str(work / "model"), data=str(work / "data/data.jsonl"), output_dir=str(out),
                            method=method, lora={"rank": RANK, "alpha": ALPHA}, lr=args.lr, max_steps=args.steps,
                            batch_size=args.batch, eval_fraction=0.0, eval_generate=False, seed=SEED,
                            scheduler="constant", resume=False)
    result = finetune(config)
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert result.steps == args.steps
    # samples/s from the step log without the first step (warm-up: allocator, first dequantisation)
    timed = log[-1]["elapsed_s"] - log[0]["elapsed_s"]
    return {"train_s": timed, "timed_samples": (args.steps - 1) * args.batch,
            "mean_loss": sum(r["loss"] for r in log) / len(log)}


def run_trl(args: argparse.Namespace, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from PIL import Image
    from transformers import AutoModelForImageTextToText, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from moesaic.backends.quantization import bnb_config
    from moesaic.finetune.model import load_processor, lora_targets

    processor = load_processor(work / "model")
    quant = bnb_config("4bit", compute_dtype=torch.float32, quant_type="nf4", double_quant=True)
    model = AutoModelForImageTextToText.from_pretrained(work / "model", dtype=torch.float32,
                                                        quantization_config=quant, device_map={"": "cpu"})
    rows = [json.loads(x) for x in (work / "data/data.jsonl").read_text().splitlines()]
    data = Dataset.from_list([{
        "images": [Image.open(r["image"]).convert("RGB")],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}],
        "completion": [{"role": "assistant", "content": [{"type": "text", "text": r["answer"]}]}],
    } for r in rows])
    peft = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                      target_modules=lora_targets(model, "all-linear", False))
    config = SFTConfig(output_dir=str(work / "out-trl"), per_device_train_batch_size=args.batch, max_steps=args.steps,
                       learning_rate=args.lr, lr_scheduler_type="constant", seed=SEED, save_strategy="no",
                       report_to=[], max_length=None, completion_only_loss=True, logging_steps=1,
                       use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, max_grad_norm=1.0,
                       gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False})
    stamps: list[float] = []

    class Clock(TrainerCallback):  # same span as moesaic's: from the end of step 1 to the end of the last
        def on_step_end(self, *_: object, **__: object) -> None:
            stamps.append(time.perf_counter())

    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=processor, peft_config=peft,
                         callbacks=[Clock()])
    out = trainer.train()
    return {"train_s": stamps[-1] - stamps[0], "timed_samples": (args.steps - 1) * args.batch,
            "mean_loss": out.metrics.get("train_loss")}


def worker(args: argparse.Namespace) -> None:
    import accelerate  # noqa: F401  (heavy imports before the baseline, for every trainer alike)
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import moesaic.finetune.train  # noqa: F401

    if args.worker == "trl-qlora":
        import trl  # noqa: F401
    baseline = peak_rss_mb()
    work = Path(args.work)
    stats = run_trl(args, work) if args.worker == "trl-qlora" else run_moesaic(args, work, args.worker)
    stats["samples_per_s"] = stats["timed_samples"] / stats["train_s"]
    stats["peak_rss_mb"] = peak_rss_mb()
    stats["baseline_rss_mb"] = baseline
    print("RESULT " + json.dumps(stats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--trainers", default="lora,qlora,trl-qlora")
    parser.add_argument("--worker", choices=["lora", "qlora", "trl-qlora"], help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        params = make_model(work / "model", args.image_size)
        (work / "data").mkdir()
        make_data(work / "data", args.samples, args.image_size)
        results = {}
        for name in args.trainers.split(","):
            cmd = [sys.executable, __file__, "--worker", name, "--work", str(work), "--steps", str(args.steps),
                   "--batch", str(args.batch), "--lr", str(args.lr)]
            env = {**os.environ, "MOESAIC_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
            results[name] = {**json.loads(line[-1][7:]), "wall_s": time.perf_counter() - t0}
            print(f"{name}: {results[name]}", flush=True)
    print(f"\nSmolVLM-256M-shaped random Idefics3 ({params / 1e6:.0f}M parameters, bf16 on disk), "
          f"{args.steps} steps x batch {args.batch}, {args.image_size}px images, LoRA r{RANK} all-linear (text + "
          f"projector), torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}\n")
    print(f"{'trainer':<10} {'samples/s':>10} {'peak RSS MB':>12} {'RSS after imports':>18} {'mean loss':>10}")
    for name, r in results.items():
        loss = r["mean_loss"] if r["mean_loss"] is not None else float("nan")
        print(f"{name:<10} {r['samples_per_s']:>10.3f} {r['peak_rss_mb']:>12.0f} {r['baseline_rss_mb']:>18.0f} "
              f"{loss:>10.4f}")
    if {"lora", "qlora"} <= results.keys():
        q, lo = results["qlora"], results["lora"]
        print(f"\nQLoRA / LoRA peak RSS: {q['peak_rss_mb'] / lo['peak_rss_mb']:.2f}x "
              f"(above the import baseline: {(q['peak_rss_mb'] - q['baseline_rss_mb']) / (lo['peak_rss_mb'] - lo['baseline_rss_mb']):.2f}x)")
    if {"qlora", "trl-qlora"} <= results.keys():
        q, t = results["qlora"], results["trl-qlora"]
        print(f"moesaic QLoRA / TRL QLoRA: {q['samples_per_s'] / t['samples_per_s']:.2f}x samples/s, "
              f"{q['peak_rss_mb'] / t['peak_rss_mb']:.2f}x peak RSS")


if __name__ == "__main__":
    main()
