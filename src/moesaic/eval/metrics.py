"""Answer-quality metrics: pure functions of strings (or attribute dicts), no model, no I/O.

Every metric scores one prediction against one or more references and returns a float in [0, 1];
with several references the best one counts (the usual convention of SQuAD, VQA and ST-VQA).

Definitions:

- ``exact_match``: the prediction equals a reference after trimming surrounding whitespace
  (case-sensitive).
- ``normalized_match``: equality after :func:`normalize_answer` — lowercase, punctuation to spaces,
  articles removed, number words to digits (the answer normalisation of the VQA evaluation, Antol et al.
  2015, "VQA: Visual Question Answering", and of SQuAD's evaluation script, Rajpurkar et al. 2016).
- ``anls``: Average Normalized Levenshtein Similarity, Biten et al. 2019, "Scene Text Visual Question
  Answering" (ST-VQA), eq. 1: ``s = max_j (1 - NL(pred, ref_j))`` if that NL < τ (0.5) else 0, where
  ``NL(a, b) = Levenshtein(a, b) / max(|a|, |b|)``; strings are lowercased, trimmed and their
  whitespace collapsed first, as in the official ST-VQA evaluation.
- ``token_f1``: the bag-of-tokens F1 of SQuAD's evaluation script (Rajpurkar et al. 2016) after its
  ``normalize_answer`` (lowercase, punctuation removed, articles removed, whitespace collapsed); when
  either side has no tokens, F1 is 1 if both are empty else 0 (SQuAD v2.0 convention).
- ``contains_match`` and ``relaxed_numeric`` (relaxed matching for sentence answers and numbers): see
  :mod:`moesaic.eval.matching`.
- ``attribute_accuracy``: per attribute field, 1 if the predicted value normalised-matches the
  reference value, else 0 (a missing field scores 0).
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = [
    "MetricName",
    "exact_match",
    "normalized_match",
    "anls",
    "token_f1",
    "attribute_accuracy",
    "normalize_answer",
    "squad_normalize",
    "levenshtein",
    "parse_attributes",
]

MetricName = Literal["exact_match", "normalized_match", "contains_match", "relaxed_numeric", "anls", "token_f1",
                     "attribute_accuracy"]
"""Every metric by name; ``contains_match`` and ``relaxed_numeric`` live in :mod:`moesaic.eval.matching`."""

References = str | Sequence[str]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT_TO_SPACE = str.maketrans({c: " " for c in string.punctuation})
_PUNCT_REMOVE = str.maketrans("", "", string.punctuation)
_UNITS = {
    "none": 0, "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}


def _refs(references: References) -> list[str]:
    return [references] if isinstance(references, str) else list(references)


def _words_to_digits(tokens: list[str]) -> list[str]:
    """``["twenty", "one", "cats"]`` → ``["21", "cats"]``; ``"hundred"`` → 100 on its own."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in _TENS:
            value = _TENS[tok]
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            if 1 <= _UNITS.get(nxt, 0) <= 9:
                value += _UNITS[nxt]
                i += 1
            out.append(str(value))
        elif tok in _UNITS:
            out.append(str(_UNITS[tok]))
        elif tok == "hundred":
            out.append("100")
        else:
            out.append(tok)
        i += 1
    return out


def normalize_answer(text: str) -> str:
    """VQA/SQuAD-style normalisation used by :func:`normalized_match`.

    Lowercase; punctuation becomes spaces (so ``"twenty-one"`` is two words); the articles *a*, *an*,
    *the* are dropped; number words up to ninety-nine (and *hundred*) become digits; whitespace collapses.
    """
    text = text.lower().translate(_PUNCT_TO_SPACE)
    text = _ARTICLES.sub(" ", text)
    return " ".join(_words_to_digits(text.split()))


def squad_normalize(text: str) -> str:
    """SQuAD's ``normalize_answer``: lowercase, remove punctuation, remove articles, collapse spaces."""
    text = text.lower().translate(_PUNCT_REMOVE)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, references: References) -> float:
    """1.0 if ``prediction.strip()`` equals some ``reference.strip()`` (case-sensitive), else 0.0.

    The strictest reading of SQuAD's exact match (Rajpurkar et al. 2016), without its normalisation."""
    pred = prediction.strip()
    return float(any(pred == ref.strip() for ref in _refs(references)))


def normalized_match(prediction: str, references: References) -> float:
    """1.0 if the :func:`normalize_answer` forms are equal for some reference, else 0.0.

    The VQA evaluation's answer matching (Antol et al. 2015, "VQA: Visual Question Answering") after its
    normalisation; the strict metric printed beside a relaxed one."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(ref) for ref in _refs(references)))


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions each cost 1); O(|a|·|b|) time, O(|b|) memory."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _anls_clean(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str, references: References, threshold: float = 0.5) -> float:
    """ANLS of one answer (Biten et al. 2019, ST-VQA): best ``1 - NL`` over references, 0 when NL ≥ τ.

    Two empty strings are identical (NL = 0, score 1); an empty string against a non-empty one has NL = 1.
    """
    pred = _anls_clean(prediction)
    best = 0.0
    for ref in _refs(references):
        gold = _anls_clean(ref)
        longest = max(len(pred), len(gold))
        nl = levenshtein(pred, gold) / longest if longest else 0.0
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


def _f1_one(prediction: str, reference: str) -> float:
    pred_tokens = squad_normalize(prediction).split()
    gold_tokens = squad_normalize(reference).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: References) -> float:
    """SQuAD token F1 (Rajpurkar et al. 2016, "SQuAD: 100,000+ Questions for Machine Comprehension of
    Text", its evaluation script): harmonic mean of token precision and recall, best over references."""
    return max((_f1_one(prediction, ref) for ref in _refs(references)), default=0.0)


def _value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_value_text(v) for v in value)
    if value is None:
        return ""
    return str(value)


def attribute_accuracy(predicted: Mapping[str, Any], reference: Mapping[str, Any]) -> dict[str, float]:
    """Per reference field: 1.0 if ``predicted[field]`` normalised-matches the reference value, else 0.0.

    Field-level accuracy as in attribute value extraction (e.g. Zheng et al. 2018, "OpenTag: Open Attribute
    Value Extraction from Product Profiles", which scores per attribute); values compare as in
    :func:`normalized_match`.

    Keys compare case-insensitively; a field the prediction lacks scores 0.0. Lists compare as their
    space-joined words (so ``["red", "blue"]`` matches ``"red, blue"``).
    """
    by_key = {str(k).strip().lower(): v for k, v in predicted.items()}
    scores: dict[str, float] = {}
    for field, gold in reference.items():
        key = str(field).strip().lower()
        if key not in by_key:
            scores[str(field)] = 0.0
            continue
        scores[str(field)] = normalized_match(_value_text(by_key[key]), _value_text(gold))
    return scores


_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_KEY_VALUE = re.compile(r"^\s*[-*]?\s*([A-Za-z_][\w ]*?)\s*[:=]\s*(.+?)\s*$")


def parse_attributes(text: str) -> dict[str, Any]:
    """Read a model's attribute answer: the first JSON object in ``text``, else ``key: value`` lines.

    Returns ``{}`` when nothing parses (every field then scores 0).
    """
    match = _JSON_OBJECT.search(text)
    if match:
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            return data
    pairs: dict[str, Any] = {}
    for line in text.splitlines():
        kv = _KEY_VALUE.match(line)
        if kv:
            pairs[kv.group(1)] = kv.group(2).strip().strip('",')
    return pairs
