"""Relaxed matching for how VLMs answer: in a sentence, with hedges, lists and numbers.

A chat VLM asked "What colour is the product?" says "The main colour is red (100%), on a white background."
rather than "red"; exact and normalised equality score that 0. The two metrics here credit such answers
without crediting everything that merely mentions the reference:

- :func:`contains_match` — the reference, at word boundaries, as the answer's *main claim*.
- :func:`relaxed_numeric` — ChartQA's relaxed accuracy: the answer's number within 5 % of the reference.

Both read the answer as *segments* (clauses), split at sentence and list punctuation (``. , ; ! ?``
followed by a space or the end, and new lines) and before the words *and*, *or*, *but*. The main claim is
the first segment that says something: segments made only of filler (``Sure!``, ``Okay,``) are skipped, and
so are rejections — a negation followed by what it negates (``not red``, ``isn't blue``, ``no text``) — as
in NegEx (Chapman et al. 2001, "A Simple Algorithm for Identifying Negated Findings and Diseases in
Discharge Summaries"), where a negation trigger negates the terms after it up to the end of its clause.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from moesaic.eval.metrics import normalize_answer, normalized_match

__all__ = ["contains_match", "relaxed_numeric", "parse_number", "main_claim", "answer_segments"]

References = str | Sequence[str]

_SEGMENT_BREAK = re.compile(r"[;!?\n]+|[.,](?=\s|$)|(?=\b(?:and|or|but|whereas)\b)", re.IGNORECASE)
_CONTRACTED_NOT = re.compile(r"n't\b|n’t\b", re.IGNORECASE)
_NONE = re.compile(r"\bnone\b", re.IGNORECASE)  # normalize_answer reads "none" as 0; here it negates
_NEGATIONS = frozenset({"not", "no", "never", "neither", "nor", "without", "nothing", "nobody", "cannot"})
_JOINERS = frozenset({"and", "or", "but", "whereas"})
_FILLER = frozenset({
    "sure", "ok", "okay", "certainly", "well", "hmm", "hello", "hi", "absolutely", "alright", "of", "course",
    "here", "s", "is", "it", "this", "that", "answer", "great", "question", "good", "let", "me", "see", "i",
})
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_NUMBER_TOKEN = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d*)(?:\.\d+)?")
_CURRENCY = "$€£¥"
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")


def _refs(references: References) -> list[str]:
    return [references] if isinstance(references, str) else list(references)


def _prepare(text: str) -> str:
    """Contracted negations spelled out (``isn't`` → ``is not``) and ``none`` kept a word, on both sides."""
    return _NONE.sub("no", _CONTRACTED_NOT.sub(" not", text))


def answer_segments(answer: str) -> list[str]:
    """The answer's clauses, in order (raw text, joiner words kept at the start of their clause)."""
    return [s for s in (p.strip() for p in _SEGMENT_BREAK.split(_prepare(answer))) if s]


def _tokens(text: str) -> list[str]:
    """Normalised words; a number stays one word (``12.4`` is not ``12`` and ``4``, ``1,200`` is ``1200``)."""
    text = _DECIMAL_POINT.sub("point", _THOUSANDS.sub("", _prepare(text)))
    return normalize_answer(text).split()


def _is_filler(tokens: list[str]) -> bool:
    return all(t in _FILLER or t in _JOINERS for t in tokens)


def _is_rejection(tokens: list[str]) -> bool:
    """A negation followed by something it negates (``not red``); a bare ``No`` is an answer, not a rejection."""
    return any(t in _NEGATIONS for t in tokens[:-1])


def main_claim(answer: str) -> int | None:
    """Index (into :func:`answer_segments`) of the first segment that is neither filler nor a rejection."""
    for i, segment in enumerate(answer_segments(answer)):
        tokens = _tokens(segment)
        if tokens and not _is_filler(tokens) and not _is_rejection(tokens):
            return i
    return None


def contains_match(prediction: str, references: References) -> float:
    """1.0 if some reference is the prediction's main claim, else 0.0.

    Both sides are normalised as in :func:`~moesaic.eval.metrics.normalize_answer` (VQA: lowercase,
    punctuation to spaces, articles dropped, number words to digits) and compared as whole words, so
    ``red`` is found in "a red shirt" but not in "reddish". Containment of the ground truth in a free-form
    answer is how generative VLMs are scored in LVLM-eHub (Xu et al. 2023, "LVLM-eHub: A Comprehensive
    Evaluation Benchmark for Large Vision-Language Models", its word-matching evaluation); moesaic adds two
    rules so that a list or a denial is not a hit: the reference must start in the main claim (the first
    segment that says something, see the module docstring), and no negation may precede it in that segment.
    So "The main colour is red (100%)" matches ``red``; "brown (54%), black (16%), red (15%)" and "not red"
    do not. A reference may span segments ("black and white" matches "black and white stripes").
    """
    segments = answer_segments(prediction)
    main = main_claim(prediction)
    if main is None:
        return 0.0
    flat: list[str] = []
    owner: list[int] = []
    for i, segment in enumerate(segments):
        tokens = _tokens(segment)
        flat += tokens
        owner += [i] * len(tokens)
    for ref in _refs(references):
        want = _tokens(ref)
        if not want:
            continue
        for start in range(len(flat) - len(want) + 1):
            if owner[start] != main or flat[start:start + len(want)] != want:
                continue
            before = [t for t, o in zip(flat[:start], owner[:start], strict=True) if o == main]
            if not any(t in _NEGATIONS for t in before):
                return 1.0
    return 0.0


def parse_number(text: str) -> float | None:
    """``text`` as a number when it is one: ``12``, ``-3.5``, ``1,200``, ``$40``, ``40%`` (the ``%`` is
    dropped, so a percentage compares in its own units); else None."""
    value = text.strip().strip(_CURRENCY).rstrip("%").strip()
    if not value or not _NUMBER_TOKEN.fullmatch(value) or not any(c.isdigit() for c in value):
        return None
    return float(value.replace(",", ""))


def _first_number(segment: str) -> float | None:
    for match in _NUMBER.finditer(segment):
        if any(c.isdigit() for c in match.group(0)):
            return float(match.group(0).replace(",", ""))
    words = [t for t in _tokens(segment) if t.isdigit()]  # number words ("twelve" → 12)
    return float(words[0]) if words else None


def relaxed_numeric(prediction: str, references: References, tolerance: float = 0.05) -> float:
    """ChartQA's relaxed accuracy (Masry et al. 2022, "ChartQA: A Benchmark for Question Answering about
    Charts with Visual and Logical Reasoning", §4; after Methani et al. 2020, PlotQA): a numeric reference is
    matched when the answer's number is within ``tolerance`` (5 %) of it, ``|pred - ref| ≤ tolerance·|ref|``;
    a non-numeric reference needs an exact answer (here: :func:`~moesaic.eval.metrics.normalized_match`).

    ChartQA expects the bare number; for a sentence, the number read is the first one in the main claim
    (see :func:`contains_match`), so "It is about 12.4 (2023 data)" gives 12.4. A zero reference needs 0.
    """
    segments = answer_segments(prediction)
    main = main_claim(prediction)
    value = _first_number(segments[main]) if main is not None else None
    best = 0.0
    for ref in _refs(references):
        target = parse_number(ref)
        if target is None:
            best = max(best, normalized_match(prediction, ref))
        elif value is not None and abs(value - target) <= tolerance * abs(target):
            return 1.0
    return best
