"""Writers turn the experts' findings into an answer.

- :func:`grounded_answer` (the default) states only what the experts found, with their confidence:
  ``This looks like an espresso (96%). Dominant colours: brown (36%), orange (17%), black (16%).``
- :func:`llm_answer` asks a small causal LM (SmolLM2-135M by default) to rewrite those grounded facts
  fluently. It reads better when it works, but the 135M model drops and invents facts. Measured with
  ``benchmarks/starter_writer.py`` on 8 images (see :mod:`moesaic.experts.factcheck`): template recall
  1.00 with 0 invented facts per answer; SmolLM2 (greedy, its best setting) recall 0.59, 0.12 invented,
  ~5 s per answer on 2 busy CPU cores. So the template is the default and the LLM writer is opt-in
  (``model="starter:llm"``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from moesaic.experts.findings import ColorFinding, ImageFindings, TagFinding, TextFinding

if TYPE_CHECKING:  # pragma: no cover
    from moesaic.experts.llm import CausalLMWriter
    from moesaic.experts.router import Route

__all__ = [
    "WriterName", "grounded_answer", "describe_image", "llm_answer", "pct", "with_article", "asked_thing", "clear_text",
    "kind_of",
]

WriterName = Literal["template", "llm"]

CONFIDENT = 0.5
UNSURE = 0.1
GENERIC_TEXT_SCORE = 0.8
_ASKED = re.compile(
    r"\b(?:is|are)\s+(?:this|that|it|there|these|those)\s+(?:an?|any|some)\s+([a-z][a-z -]*?)\s*[?.!]*$"
)


def pct(score: float) -> str:
    value = round(score * 100)
    return "<1%" if value < 1 else f"{value}%"


def with_article(label: str) -> str:
    return ("an " if label[:1].lower() in "aeiou" else "a ") + label


def asked_thing(question: str) -> str | None:
    """The thing a yes/no question asks about: "Is there a cat?" → "cat"."""
    m = _ASKED.search(question.lower().strip())
    return m.group(1).strip() if m else None


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def kind_of(tags: list[TagFinding]) -> tuple[str, list[TagFinding]] | None:
    """A shared head noun whose tags together pass :data:`CONFIDENT`: tiger cat + Egyptian cat + tabby cat
    → ("cat", those tags). The probabilities add because the classes are exclusive."""
    groups: dict[str, list[TagFinding]] = {}
    for tag in tags:
        groups.setdefault(tag.label.lower().split()[-1], []).append(tag)
    best = max(groups.items(), key=lambda kv: sum(t.score for t in kv[1]))
    if len(best[1]) >= 2 and sum(t.score for t in best[1]) >= CONFIDENT:
        return best
    return None


def _tags_sentence(tags: list[TagFinding], question: str) -> str:
    if not tags:
        return "I could not recognise anything in it."
    top = tags[0]
    thing = asked_thing(question)
    if thing:
        wanted = _singular(thing.split()[-1])
        hit = next((t for t in tags if wanted in {_singular(w) for w in t.label.lower().split()}), None)
        if hit is not None:
            return f"Yes: it looks like {with_article(hit.label)} ({pct(hit.score)})."
        return f"I don't see {with_article(thing)}; it looks like {with_article(top.label)} ({pct(top.score)})."
    if top.score < UNSURE:
        return f"I am not sure what this shows (best guess: {with_article(top.label)}, {pct(top.score)})."
    if top.score >= CONFIDENT or len(tags) == 1:
        return f"This looks like {with_article(top.label)} ({pct(top.score)})."
    group = kind_of(tags)
    if group is not None:
        kind, members = group
        total = sum(t.score for t in members)
        listed = " or ".join(f"{with_article(t.label)} ({pct(t.score)})" for t in members[:2])
        return f"This looks like {with_article(kind)} ({pct(total)}), most likely {listed}."
    second = tags[1]
    return (
        f"This might be {with_article(top.label)} ({pct(top.score)}) "
        f"or {with_article(second.label)} ({pct(second.score)})."
    )


def _colors_sentence(colors: list[ColorFinding], asked: bool, backdrop: str | None = None) -> str:
    if not colors:
        return "I could not measure its colours."
    named = [f"{c.name} ({pct(c.share)})" for c in colors]
    on = f", on a {backdrop} background" if backdrop else ""
    if asked:
        listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
        return f"The main colours are {listed}{on}." if len(named) > 1 else f"The main colour is {listed}{on}."
    return "Dominant colours: " + ", ".join(named) + on + "."


def clear_text(line: TextFinding) -> bool:
    """Confident and at least 3 letters/digits: worth mentioning when nobody asked about text."""
    return line.score >= GENERIC_TEXT_SCORE and sum(ch.isalnum() for ch in line.text) >= 3


def _text_sentence(lines: list[TextFinding], asked: bool) -> str | None:
    if not asked:  # a generic question mentions text only when it is clearly there
        lines = [ln for ln in lines if clear_text(ln)]
    if not lines:
        return "I could not find any legible text." if asked else None
    from moesaic.experts.ocr import joined_rows

    rows = joined_rows([ln.text for ln in lines], [ln.box for ln in lines]) if all(ln.box for ln in lines) \
        else [ln.text for ln in lines]
    quoted = " / ".join(f'"{row}"' for row in rows)
    return f"The text reads: {quoted}." if asked else f"Text: {quoted}."


def describe_image(question: str, route: "Route", findings: ImageFindings) -> str:
    """The grounded sentences for one image, in tagger, text, colours order (routed experts only)."""
    sentences = []
    if findings.tags is not None and "tagger" in route.experts:
        sentences.append(_tags_sentence(findings.tags, question))
    if findings.text is not None and "ocr" in route.experts:
        text = _text_sentence(findings.text, asked=not route.generic)
        if text:
            sentences.append(text)
    if findings.colors is not None and "colors" in route.experts:
        sentences.append(_colors_sentence(findings.colors, asked=not route.generic and "colors" in route.experts,
                                          backdrop=findings.backdrop))
    return " ".join(sentences)


def grounded_answer(question: str, route: "Route", images: list[ImageFindings]) -> str:
    """State only what the experts found; several images get "Image 1: … Image 2: …"."""
    parts = [describe_image(question, route, f) for f in images]
    if len(parts) == 1:
        return parts[0]
    return " ".join(f"Image {i}: {p}" for i, p in enumerate(parts, 1))


LLM_SYSTEM = (
    "You answer questions about an image using only the facts given. Write one or two short sentences. "
    "Do not add objects, colours, text or numbers that are not in the facts."
)


def llm_answer(
    question: str,
    route: "Route",
    images: list[ImageFindings],
    writer: "CausalLMWriter",
    max_new_tokens: int = 60,
    **decoding: Any,
) -> str:
    """Ask the LM to rewrite the grounded facts as a fluent answer to ``question``."""
    facts = grounded_answer(question, route, images)
    messages = [
        {"role": "system", "content": LLM_SYSTEM},
        {"role": "user", "content": f"Facts: {facts}\nQuestion: {question or 'What is in this image?'}"},
    ]
    from moesaic.experts.llm import tidy

    text = tidy(writer.complete(messages, max_new_tokens=max_new_tokens, **decoding))
    return text or facts
