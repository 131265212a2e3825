"""Kill a fine-tuning run (SIGKILL) after a checkpoint, resume it, and reach the weights of a run never killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from moesaic.finetune.config import FinetuneConfig
from moesaic.finetune.train import finetune


def _config(base: Path, data: Path, out: Path, method: str) -> dict:
    return {"base_model": str(base), "data": str(data), "output_dir": str(out), "method": method,
            "lora": {"rank": 4, "dropout": 0.1}, "lr": 3e-3, "max_steps": 60, "save_every": 5, "batch_size": 2,
            "grad_accum": 2, "eval_fraction": 0.0, "eval_generate": False, "seed": 7, "scheduler": "cosine",
            "warmup_steps": 3}


def _kill_after_first_checkpoint(cfg_path: Path, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOESAIC_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "moesaic.cli", "finetune", str(cfg_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while not list((out / "checkpoints").glob("step-*")):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited early"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_killed_run_resumes_to_the_same_weights(ft_model, colour_data: Path, tmp_path: Path,  # noqa: ANN001
                                                method: str) -> None:
    base = ft_model("idefics3")
    straight = finetune(FinetuneConfig.validated(_config(base, colour_data, tmp_path / "straight", method)))
    assert straight.resumed_from is None and straight.steps == 60

    out = tmp_path / "killed"
    cfg_path = tmp_path / "killed.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(base, colour_data, out, method)))
    _kill_after_first_checkpoint(cfg_path, out)
    done = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))
    assert done and done[-1] < 60, "the run must be killed before it finished"
    assert not (out / "result.json").exists()

    at_kill = load_file(str(out / f"checkpoints/step-{done[-1]:08d}/trainable.safetensors"))
    resumed = finetune(FinetuneConfig.load(cfg_path))
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith(f"step-{done[-1]:08d}")
    assert resumed.steps == 60

    a = load_file(str(tmp_path / "straight/checkpoints/step-00000060/trainable.safetensors"))
    b = load_file(str(out / "checkpoints/step-00000060/trainable.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= 1e-6, f"resumed weights differ by {worst}"
    moved = max(float((a[k] - at_kill[k]).abs().max()) for k in a)
    assert moved > 1e-4, "training after the resume point must have changed the weights"

    def losses(run: Path) -> list[float]:
        return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses(out) == pytest.approx(losses(tmp_path / "straight"), abs=1e-5)
    assert len(losses(out)) == 60


def test_resume_refuses_a_checkpoint_of_another_method(ft_model, colour_data: Path,  # noqa: ANN001
                                                       tmp_path: Path) -> None:
    from moesaic.errors import ConfigError

    cfg = {**_config(ft_model("idefics3"), colour_data, tmp_path / "run", "lora"), "max_steps": 2, "save_every": 1}
    finetune(FinetuneConfig.validated(cfg))
    with pytest.raises(ConfigError, match="trained other parameters") as info:
        finetune(FinetuneConfig.validated({**cfg, "method": "full"}))
    assert "--no-resume" in (info.value.hint or "")
    fresh = finetune(FinetuneConfig.validated({**cfg, "method": "full", "resume": False}))
    assert fresh.resumed_from is None and fresh.steps == 2


def test_metrics_log_is_cut_back_to_the_checkpoint_even_when_torn(tmp_path: Path) -> None:
    from moesaic.finetune.loop import _metrics_resume

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "loss": 1.2}\n{"step": 4, "lo')
    _metrics_resume(log, 2)
    assert [json.loads(x)["step"] for x in log.read_text().splitlines()] == [1, 2]
