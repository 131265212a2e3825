"""Eval fixtures: coloured test images, a QA and an attribute dataset, and backends whose answers are known."""

from __future__ import annotations

import json
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from moesaic.backends import registry
from moesaic.backends.base import Answer, Backend, BackendOptions, GenerationParams
from moesaic.inputs.messages import Turn

COLORS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20)}


def dominant_color(image: Image.Image) -> str:
    """The colour name whose channel dominates the image's mean pixel."""
    pixels = list(image.convert("RGB").resize((4, 4)).getdata())
    means = [sum(p[c] for p in pixels) / len(pixels) for c in range(3)]
    return ("red", "green", "blue")[means.index(max(means))]


class KnownBackend(Backend):
    """A real backend with known answers: ``color`` names the image's colour (JSON when asked for JSON),
    ``constant`` always says red, ``verbose`` says it in a sentence as the starter experts do, ``list`` names
    it last of three candidates. ``delay_s`` makes it slower (``cold``: only its first call, like lazy
    set-up); ``calls`` counts generate calls."""

    name = "known"
    instances: list["KnownBackend"] = []

    def __init__(self, mode: str, delay_s: float = 0.0) -> None:
        self.mode = mode
        self.delay_s = delay_s
        self.calls = 0
        self.params_seen: list[GenerationParams] = []
        KnownBackend.instances.append(self)

    @classmethod
    def create(cls, model: str, options: BackendOptions) -> "KnownBackend":
        mode, _, delay = model.partition("@")
        return cls(mode, float(delay or 0.0))

    def generate(self, prompt: list[Turn], params: GenerationParams | None = None) -> Answer:
        self.calls += 1
        self.params_seen.append(params or GenerationParams())
        turn = prompt[-1]
        assert len(turn.images) == 1 and turn.text
        if self.delay_s and (self.mode != "cold" or self.calls == 1):  # "cold": only the first call is slow
            time.sleep(self.delay_s)
        color = dominant_color(turn.images[0]) if self.mode != "constant" else "red"
        wants_json = "JSON" in turn.text
        if self.mode == "verbose":
            text = f"The main colour is {color} (100%), on a white background."
        elif self.mode == "list":
            text = f"brown (54%), black (16%), {color} (15%)"
        elif self.mode == "color":
            text = json.dumps({"color": color, "size": "small"}) if wants_json else color
        else:
            text = "color: red" if wants_json else "red"
        return Answer(text=text, model=self.mode, prompt_tokens=7, completion_tokens=len(text.split()))


@pytest.fixture
def known_backends(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[KnownBackend]]:
    """Register KnownBackend as a plugin backend named ``known`` (model strings ``color`` / ``constant@0.05``)."""
    module = types.ModuleType("moesaic_eval_test_plugins")
    module.KnownBackend = KnownBackend  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(
        registry._REGISTRY, "known", registry.BackendSpec("known", f"{module.__name__}:KnownBackend.create", "test")
    )
    KnownBackend.instances = []
    yield KnownBackend
    KnownBackend.instances = []


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "data" / "img"
    folder.mkdir(parents=True)
    paths = {}
    for name, rgb in COLORS.items():
        paths[name] = folder / f"{name}.png"
        Image.new("RGB", (32, 32), rgb).save(paths[name])
    return paths


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def qa_dataset(images: dict[str, Path]) -> Path:
    """Three colour questions; references chosen so every metric takes a non-trivial value."""
    return write_jsonl(images["red"].parent.parent / "qa.jsonl", [
        {"id": "r", "image": "img/red.png", "question": "What colour is it?", "reference": "red"},
        {"id": "b", "image": "img/blue.png", "question": "What colour is it?", "references": ["Blue", "navy"]},
        {"id": "g", "image": "img/green.png", "question": "What colour is it?",
         "references": ["The green one", "greens"]},
    ])


@pytest.fixture
def attr_dataset(images: dict[str, Path]) -> Path:
    return write_jsonl(images["red"].parent.parent / "attrs.jsonl", [
        {"id": "p1", "image": "img/red.png", "attributes": {"color": "red", "size": "small"}},
        {"id": "p2", "image": "img/blue.png", "attributes": {"color": "blue", "size": "large"}},
    ])


@pytest.fixture(scope="session")
def eval_tiny_vlms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random Idefics3 and LLaVA (seed 0) saved once per session by the shared factories."""
    from moesaic.testing import make_tiny_model

    root = tmp_path_factory.mktemp("eval_tiny_vlms")
    return {fam: make_tiny_model(fam, root / fam, seed=0) for fam in ("idefics3", "llava")}
