"""Closed-answer scoring of the real-decoder study: first-token exact match, per-field JSON accuracy,
Wilson intervals and paired-bootstrap retention intervals.

First-token scoring: every answer of a domain starts with its own letter, so its first token is unique;
a row is right when, among the candidates' first tokens, the gold one has the highest logit at the
position that predicts the answer. One prefill per batch with ``logits_to_keep`` (no generation).
JSON answers (garment) are scored field by field under teacher forcing: the gold answer up to a field's
value is fed, and the value's first token is compared among that field's values; the row is exact when
every field is right. Batches are left-padded, so every row's positions count from the same end.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

from moesaic.eval.quality_real.domains import GARMENT_FIELDS, text_domain
from moesaic.progress import progress

__all__ = ["Target", "ScoredRow", "build_targets", "score_rows", "wilson", "bootstrap_retention"]


@dataclass(frozen=True)
class Target:
    """One scored position: the logits ``back`` positions from the end predict a token among ``candidates``."""

    back: int  # 1 = the last position
    candidates: tuple[int, ...]
    gold: int  # index into candidates
    field: str


@dataclass(frozen=True)
class ScoredRow:
    text: str
    targets: tuple[Target, ...]


def _first_ids(tok: Any, words: tuple[str, ...]) -> tuple[int, ...]:
    ids = tuple(int(tok(w, add_special_tokens=False)["input_ids"][0]) for w in words)
    if len(set(ids)) != len(ids):
        raise ValueError(f"answers {words} share a first token; first-token scoring needs distinct ones")
    return ids


def build_targets(tokenizer: Any, processor: Any, rows: list[dict[str, Any]]) -> list[ScoredRow]:
    """What to score in each row (``rows`` as written by :func:`~.domains.write_split`)."""
    out = []
    field_ids = {f: (tuple(vals), _first_ids(tokenizer, tuple(vals))) for f, vals in GARMENT_FIELDS.items()}
    answer_ids: dict[str, tuple[int, ...]] = {}
    for row in rows:
        dom = text_domain(row["domain"])
        prompt = processor.apply_chat_template([{"role": "user", "content": row["question"]}],
                                               add_generation_prompt=True, tokenize=False)
        if not dom.json_fields:
            ids = answer_ids.setdefault(dom.name, _first_ids(tokenizer, dom.answers))
            out.append(ScoredRow(prompt, (Target(1, ids, dom.answers.index(row["answer"]), "answer"),)))
            continue
        text = prompt + row["answer"]
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = {s: i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s}
        targets = []
        for field, value in json.loads(row["answer"]).items():
            char = len(prompt) + row["answer"].index(f'"{field}": "{value}"') + len(f'"{field}": "')
            if char not in starts:
                raise ValueError(f"the value of {field!r} does not start a token in {row['answer']!r}")
            values, ids = field_ids[field]
            targets.append(Target(len(enc["input_ids"]) - starts[char] + 1, ids, values.index(value), field))
        out.append(ScoredRow(text, tuple(targets)))
    return out


def score_rows(model: Any, tokenizer: Any, rows: list[ScoredRow], batch_size: int = 16,
               desc: str = "scoring") -> list[dict[str, bool]]:
    """Per row: field -> right or wrong (single-answer rows have one field, ``answer``)."""
    import torch

    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].text))  # similar lengths batch together: less padding
    results: list[dict[str, bool]] = []
    try:
        for start in progress(range(0, len(rows), batch_size), desc=desc, unit="batch"):
            chunk = [rows[i] for i in order[start:start + batch_size]]
            enc = tokenizer([r.text for r in chunk], add_special_tokens=False, padding=True, return_tensors="pt")
            keep = max(t.back for r in chunk for t in r.targets)
            with torch.no_grad():
                logits = model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                               logits_to_keep=keep).logits  # (batch, keep, vocab)
            for b, row in enumerate(chunk):
                marks = {}
                for t in row.targets:
                    scores = logits[b, keep - t.back, list(t.candidates)]  # (candidates,)
                    marks[t.field] = int(scores.argmax()) == t.gold
                results.append(marks)
    finally:
        tokenizer.padding_side = side
    out: list[dict[str, bool]] = [{} for _ in rows]
    for i, marks in zip(order, results):
        out[i] = marks
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (95 % by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_retention(merged: dict[str, list[bool]], expert: dict[str, list[bool]], samples: int = 1000,
                        seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap (rows resampled together for merged and expert) of retention = merged acc ÷ expert acc:
    95 % percentile intervals per domain, for the mean and for the minimum over domains."""
    rng = random.Random(seed)
    domains = list(merged)
    draws: dict[str, list[float]] = {d: [] for d in domains}
    for _ in range(samples):
        for d in domains:
            n = len(merged[d])
            idx = [rng.randrange(n) for _ in range(n)]
            own = sum(expert[d][i] for i in idx)
            draws[d].append(sum(merged[d][i] for i in idx) / own if own else 0.0)

    def interval(values: list[float]) -> list[float]:
        v = sorted(values)
        return [v[int(0.025 * (len(v) - 1))], v[int(0.975 * (len(v) - 1))]]

    means = [sum(draws[d][s] for d in domains) / len(domains) for s in range(samples)]
    mins = [min(draws[d][s] for d in domains) for s in range(samples)]
    return {"per_domain": {d: interval(draws[d]) for d in domains}, "mean": interval(means), "min": interval(mins)}
