"""A killed or failing command never leaves a partial artefact where a finished one is expected.

``merge``: SIGKILL of a subprocess after the weights are written but before they are published leaves no
output folder; a failure injected after part of the write leaves the previous version byte-identical.
``index``: SIGKILL mid-run leaves a valid SQLite index holding exactly the committed batches, and the next
run completes it. ``train-gates``: SIGKILL while the trained model is being published leaves no output folder,
and the rerun resumes from the last saved step to the gates of a run never killed. ``finetune``: SIGKILL while
a checkpoint is being published leaves no ``step-*`` folder for it, and the rerun resumes from the previous
checkpoint. (Resuming to bit-identical fine-tuned weights after a kill *between* checkpoints is covered by
tests/finetune/test_finetune_resume.py::test_killed_run_resumes_to_the_same_weights.)
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("moesaic.moe.merge")


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_until_marker(script: str, marker: Path, timeout_s: float = 180) -> subprocess.Popen:
    """Start ``script`` in a fresh Python; return once it created ``marker`` (it then sleeps, mid-write)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MOESAIC_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the subprocess ended before the kill point:\n{proc.stdout.read()}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the subprocess never reached the kill point"
        time.sleep(0.1)
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


MERGE_SCRIPT = """
import time
from pathlib import Path
import moesaic.atomic as atomic
from moesaic.moe.config import MergeConfig
from moesaic.moe.merge import merge

def stalled_fsync(root):  # every file is written into the temporary folder; publication is next
    assert any(Path(root).rglob("*.safetensors")), "weights were not written yet"
    Path({marker!r}).write_text("ready")
    time.sleep(120)

atomic.fsync_tree = stalled_fsync
merge(MergeConfig(base_model={base!r}, out={out!r}, gate_mode="random", experts_per_token=1,
                  experts=[{{"source_model": {base!r}, "name": "a"}}, {{"source_model": {base!r}, "name": "b"}}]))
"""


def merge_config(base: Path, out: Path):  # type: ignore[no-untyped-def]
    from moesaic.moe.config import MergeConfig

    experts = [{"source_model": str(base), "name": n} for n in ("a", "b")]
    return MergeConfig(base_model=str(base), out=str(out), gate_mode="random", experts_per_token=1,
                       experts=experts)  # type: ignore[arg-type]


@pytest.mark.slow
def test_merge_killed_mid_write_leaves_no_output(tiny_model_dir, tmp_path):
    base, out, marker = tiny_model_dir("idefics3"), tmp_path / "moe", tmp_path / "marker"
    proc = run_until_marker(MERGE_SCRIPT.format(marker=str(marker), base=str(base), out=str(out)), marker)
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert partial and any(partial[0].rglob("*.safetensors"))  # the weights really were mid-publication
    kill(proc)
    assert not out.exists(), "a killed merge left a folder where the finished model is expected"


def test_merge_failing_after_partial_write_keeps_the_previous_version(tiny_model_dir, tmp_path, monkeypatch):
    from moesaic.moe.config import MergeConfig
    from moesaic.moe.merge import merge

    base, out = tiny_model_dir("idefics3"), tmp_path / "moe"
    first = merge(merge_config(base, out))
    assert first.num_experts == 2 and (out / "config.json").is_file()
    before = tree_digest(out)

    def disk_full(self, folder, *args, **kwargs):  # type: ignore[no-untyped-def]
        (Path(folder) / "merge.yaml").write_text("half a fi")  # part of the write, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(MergeConfig, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        merge(merge_config(base, out))
    assert tree_digest(out) == before, "the previous merged model changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moe"], "temporary folders were left behind"


INDEX_SCRIPT = """
import time
from pathlib import Path
from moesaic.tasks.search import commands
from moesaic.tasks.search.commands import IndexConfig, index
from moesaic.tasks.search.embedders import CaptionEmbedder

commands.COMMIT_EVERY = 2
real = CaptionEmbedder.describe
calls = {{"n": 0}}

def describe(self, image, extra=None):
    calls["n"] += 1
    if calls["n"] == 6:  # five rows upserted, two batches of two committed, one row in the open transaction
        Path({marker!r}).write_text("ready")
        time.sleep(120)
    return real(self, image, extra)

CaptionEmbedder.describe = describe
index(IndexConfig(source={source!r}, db={db!r}, ocr=False))
"""


@pytest.mark.slow
def test_index_killed_mid_run_keeps_committed_rows_and_resumes(tmp_path):
    pytest.importorskip("sqlite_vec")
    from moesaic.tasks.search.commands import IndexConfig, index
    from moesaic.tasks.search.store import VectorStore

    source, db, marker = tmp_path / "images", tmp_path / "index.db", tmp_path / "marker"
    source.mkdir()
    colours = [(220, 20, 20), (20, 160, 20), (20, 20, 220), (230, 230, 20), (20, 20, 20), (240, 240, 240),
               (160, 20, 160), (20, 200, 200)]
    for i, colour in enumerate(colours):
        Image.new("RGB", (48, 48), colour).save(source / f"item{i}.png")
    proc = run_until_marker(textwrap.dedent(INDEX_SCRIPT.format(marker=str(marker), source=str(source),
                                                                  db=str(db))), marker)
    kill(proc)
    with VectorStore(db) as store:  # opening rolls back the hot journal of the killed writer
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.count() == 4, "only the two committed batches may be in the index"
    resumed = index(IndexConfig(source=str(source), db=str(db), ocr=False))
    assert (resumed.added, resumed.skipped, resumed.total) == (4, 4, len(colours))


TRAIN_GATES_SCRIPT = """
import time
from pathlib import Path
import moesaic.atomic as atomic
from moesaic.moe.config import TrainGatesConfig
from moesaic.moe.gate_train import train_gates

def stalled_fsync(root):  # the trained model is in the temporary folder; publication is next
    assert any(Path(root).rglob("*.safetensors")), "the model was not written yet"
    Path({marker!r}).write_text("ready")
    time.sleep(120)

atomic.fsync_tree = stalled_fsync
train_gates(TrainGatesConfig(model={moe!r}, data={data!r}, steps=6, save_every=2, lr=0.05, out={out!r}))
"""


def write_text_samples(path: Path, words: list[str], n: int = 6) -> Path:
    rows = [{"question": " ".join(words[(i + j) % len(words)] for j in range(8)), "answer": words[i % len(words)]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_train_gates_killed_while_publishing_leaves_no_output_and_resumes(tiny_model_dir, tmp_path):
    import torch

    from moesaic.moe.config import TrainGatesConfig
    from moesaic.moe.gate_train import train_gates
    from moesaic.moe.merge import merge
    from moesaic.moe.routing import load_moe, routers

    moe = tmp_path / "moe"
    merge(merge_config(tiny_model_dir("idefics3"), moe))
    data = [str(write_text_samples(tmp_path / "a.jsonl", "cat dog bird fish horse cow sheep goat".split())),
            str(write_text_samples(tmp_path / "b.jsonl", "1 2 3 4 5 6 7 8 9".split()))]
    out, marker, state = tmp_path / "gated", tmp_path / "marker", tmp_path / ".gated.train-gates" / "state.pt"
    proc = run_until_marker(TRAIN_GATES_SCRIPT.format(marker=str(marker), moe=str(moe), data=data, out=str(out)),
                            marker)
    kill(proc)
    assert not out.exists(), "a killed train-gates left a folder where the trained model is expected"
    assert torch.load(state, weights_only=True)["step"] == 4  # the last checkpoint before the end (6 steps)
    resumed = train_gates(TrainGatesConfig(model=str(moe), data=data, steps=6, save_every=2, lr=0.05, out=str(out)))
    assert resumed.resumed_from == 4 and (out / "config.json").is_file() and not state.parent.exists()
    straight = train_gates(TrainGatesConfig(model=str(moe), data=data, steps=6, save_every=2, lr=0.05,
                                            out=str(tmp_path / "straight")))
    assert straight.resumed_from == 0
    for a, b in zip(routers(load_moe(out)[0]), routers(load_moe(tmp_path / "straight")[0]), strict=True):
        torch.testing.assert_close(a.weight, b.weight)  # resumed gates = gates of a run never killed


FINETUNE_SCRIPT = """
import time
from pathlib import Path
import moesaic.atomic as atomic
from moesaic.finetune.config import FinetuneConfig
from moesaic.finetune.train import finetune

real = atomic.fsync_tree

def stalled_fsync(root):  # checkpoint step 4 is written into its temporary folder; publication is next
    if Path(root).name.startswith(".step-00000004."):
        assert (Path(root) / "trainable.safetensors").is_file(), "the checkpoint was not written yet"
        Path({marker!r}).write_text("ready")
        time.sleep(120)
    real(root)

atomic.fsync_tree = stalled_fsync
finetune(FinetuneConfig.load({cfg!r}))
"""


def write_colour_rows(folder: Path, n: int = 12) -> Path:
    folder.mkdir()
    colours = {"red": (220, 20, 20), "green": (20, 180, 20), "blue": (20, 20, 220)}
    rows = []
    for i in range(n):
        name = list(colours)[i % len(colours)]
        Image.new("RGB", (32, 32), colours[name]).save(folder / f"img{i}.png")
        rows.append({"image": f"img{i}.png", "question": "What colour is it?", "answer": name})
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "data.jsonl"


@pytest.mark.slow
def test_finetune_killed_while_publishing_a_checkpoint_resumes_from_the_previous_one(tiny_model_dir, tmp_path):
    import yaml

    from moesaic.finetune.config import FinetuneConfig
    from moesaic.finetune.train import finetune

    out, marker, cfg = tmp_path / "run", tmp_path / "marker", tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "base_model": str(tiny_model_dir("idefics3")), "data": str(write_colour_rows(tmp_path / "data")),
        "output_dir": str(out), "method": "lora", "lora": {"rank": 4}, "lr": 3e-3, "max_steps": 6, "save_every": 2,
        "batch_size": 2, "grad_accum": 1, "eval_fraction": 0.0, "eval_generate": False, "seed": 7}))
    kill(run_until_marker(FINETUNE_SCRIPT.format(marker=str(marker), cfg=str(cfg)), marker))
    published = sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.startswith("."))
    assert published == ["step-00000002"], published  # step 4 was complete on disk, but never published
    assert any(p.name.endswith(".partial") for p in (out / "checkpoints").iterdir())
    assert not (out / "adapter").exists() and not (out / "result.json").exists()
    resumed = finetune(FinetuneConfig.load(cfg))
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("step-00000002")
    assert resumed.steps == 6 and (out / "adapter").is_dir() and (out / "result.json").is_file()
    assert (out / "checkpoints" / "step-00000006" / "trainable.safetensors").is_file()
