"""Gates on separable synthetic domains: experts fine-tuned a few steps on "animal" or "digit" text;
hidden-state gates send most of a domain's tokens to its expert in later layers, gate training raises
that share; the lm objective lowers its loss; an interrupted run resumes to the same gates."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from moesaic.testing import copy_processor

from moesaic.moe.config import MergeConfig, RouteReportConfig, TrainGatesConfig
from moesaic.moe.data import encode_sample, load_samples
from moesaic.moe.gate_train import train_gates
from moesaic.moe.layers import find_decoder_layers
from moesaic.moe.loading import load_dense, load_processor
from moesaic.moe.merge import merge
from moesaic.moe.report import route_report
from moesaic.moe.routing import load_moe, routers

ANIMALS = "cat dog bird grass mat photo red green blue sky plate food table coffee cup white small".split()
DIGITS = "0 1 2 3 4 5 6 7 8 9".split()


def _write(path: Path, words: list[str], n: int, rng: random.Random) -> Path:
    rows = [{"question": " ".join(rng.choices(words, k=12)), "answer": " ".join(rng.choices(words, k=6))}
            for _ in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def _finetune_mlps(base: Path, data: Path, out: Path, steps: int = 15) -> Path:
    """A few LM steps on one domain, MLP weights only (so experts differ from the base in MLPs alone)."""
    model, processor = load_dense(str(base)), load_processor(str(base))
    mlp_params = [p for mlp in find_decoder_layers(model).mlps() for p in mlp.parameters()]
    trainable = {id(p) for p in mlp_params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    opt = torch.optim.Adam(mlp_params, lr=3e-3)
    samples = load_samples(data)
    model.train()
    for step in range(steps):
        inputs = encode_sample(processor, samples[step % len(samples)])
        loss = model(**inputs, labels=inputs["input_ids"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(out)
    copy_processor(base, out)
    return out


@pytest.fixture(scope="module")
def domains(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from moesaic.testing import make_tiny_model

    tmp = tmp_path_factory.mktemp("domains")
    rng = random.Random(0)
    data = {name: {split: _write(tmp / f"{name}_{split}.jsonl", words, n, rng)
                   for split, n in (("train", 16), ("test", 8))}
            for name, words in (("animals", ANIMALS), ("digits", DIGITS))}
    base = make_tiny_model("idefics3", tmp / "base", num_hidden_layers=3)
    experts = {name: _finetune_mlps(base, d["train"], tmp / f"expert-{name}") for name, d in data.items()}
    prompts = {name: [json.loads(line)["question"] for line in d["train"].read_text().splitlines()[:4]]
               for name, d in data.items()}
    specs = [{"source_model": str(experts[n]), "name": n, "positive_prompts": prompts[n]} for n in data]
    moe = tmp / "moe"
    merge(MergeConfig(base_model=str(base), experts=specs, gate_mode="hidden_avg", experts_per_token=1, out=str(moe)))
    return {"base": base, "data": data, "moe": moe, "tmp": tmp, "specs": specs}


def _own_share(model_dir: Path, domains: dict[str, Any]) -> torch.Tensor:
    """(domains, layers): share of each domain's test tokens routed to its own expert."""
    test = {n: str(d["test"]) for n, d in domains["data"].items()}
    report = route_report(RouteReportConfig(model=str(model_dir), data=test, plot=False))
    assert report.experts == ["animals", "digits"]
    return torch.tensor([[row[i] for row in report.share[name]] for i, name in enumerate(test)])


def test_hidden_gates_route_domains_to_their_experts(domains) -> None:
    share = _own_share(domains["moe"], domains)  # (2 domains, 3 layers)
    later = share[:, 1:]  # layers 1-2
    # measured (content tokens): animals 0.53 / 0.37, digits 0.99 / 1.00 → mean 0.72 (chance: 0.5)
    assert later.mean() > 0.65, share
    assert (later.max(dim=1).values > 0.5).all(), share


@pytest.mark.parametrize(("pool", "floor"), [("token", 0.85), ("mean", 0.66)])
def test_gate_training_raises_the_share(domains, pool, floor) -> None:
    before = _own_share(domains["moe"], domains)[:, 1:].mean()
    out = domains["tmp"] / f"trained-{pool}"
    train = [str(d["train"]) for d in domains["data"].values()]
    result = train_gates(TrainGatesConfig(model=str(domains["moe"]), data=train, steps=60, lr=0.05, pool=pool,
                                          batch_size=32, out=str(out)))
    assert result.last_loss < result.first_loss / 2 and result.train_accuracy is not None
    assert result.train_accuracy > 0.9
    after = _own_share(out, domains)[:, 1:].mean()
    assert after > floor and after > before, (before, after)  # measured: token 0.72 → 0.97, mean 0.72 → 0.77
    assert (out / "merge_config.yaml").is_file() and (out / "moesaic_config.yaml").is_file()


def test_lm_objective_lowers_the_loss_and_only_moves_gates(domains) -> None:
    specs = domains["specs"]
    moe2 = domains["tmp"] / "moe-k2"
    merge(MergeConfig(base_model=str(domains["base"]), experts=specs, gate_mode="random", experts_per_token=2,
                      out=str(moe2), output_architecture="generic"))
    train = [str(d["train"]) for d in domains["data"].values()]
    out = domains["tmp"] / "lm"
    result = train_gates(TrainGatesConfig(model=str(moe2), data=train, objective="lm", steps=12, lr=0.05,
                                          batch_size=2, load_balance=0.01, out=str(out)))
    assert result.last_loss < result.first_loss, result
    before, after = load_moe(moe2)[0], load_moe(out)[0]
    sd_b, sd_a = before.state_dict(), after.state_dict()
    moved = {k for k in sd_b if not torch.equal(sd_b[k], sd_a[k])}
    assert moved and all(k.endswith("mlp.gate.weight") for k in moved), moved


def test_interrupted_training_resumes_to_the_same_gates(domains, monkeypatch) -> None:
    import moesaic.moe.gate_train as gt

    train = [str(d["train"]) for d in domains["data"].values()]
    cfg = dict(model=str(domains["moe"]), data=train, steps=8, lr=0.05, save_every=3)
    straight = train_gates(TrainGatesConfig(**cfg, out=str(domains["tmp"] / "straight")))
    real, calls = gt._classify_loss, {"n": 0}

    def crash_on_fifth(*args: Any) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(gt, "_classify_loss", crash_on_fifth)
    out = domains["tmp"] / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train_gates(TrainGatesConfig(**cfg, out=str(out)))
    assert not out.exists() and (out.parent / f".{out.name}.train-gates" / "state.pt").is_file()
    monkeypatch.setattr(gt, "_classify_loss", real)
    resumed = train_gates(TrainGatesConfig(**cfg, out=str(out)))
    assert resumed.resumed_from == 3 and resumed.first_loss == straight.first_loss
    a, b = routers(load_moe(out)[0]), routers(load_moe(domains["tmp"] / "straight")[0])
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga.weight, gb.weight)
    assert not (out.parent / f".{out.name}.train-gates").exists()
