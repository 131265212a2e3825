"""Optional judge: an OpenAI-compatible chat model grades each answer as correct or incorrect.

Off by default (``judge: {endpoint, model}`` in the eval config turns it on). The judge sees the question,
the reference answer(s) and the model's answer — not the image — and replies with one word. This is the
"LLM-as-a-judge" set-up of Zheng et al. 2023 ("Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena"),
reference-guided grading; as they report, a judge has its own biases, so moesaic reports how often it agrees
with the rule-based primary metric next to its score instead of replacing that metric.

The prompt is versioned (:data:`PROMPTS`); the version, the judge's server and model, the question, the
references and the answer form the cache key, so each verdict is asked for once (``judge_cache.jsonl`` in
the output folder) and a new prompt version asks again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

from moesaic.errors import AuthError, FetchError
from moesaic.eval.answerers import openai_client
from moesaic.eval.cache import append_line
from moesaic.eval.config import JudgeConfig, openai_base_url

__all__ = ["Judge", "PROMPTS", "JUDGE_CACHE_NAME", "parse_verdict", "agreement"]

log = logging.getLogger(__name__)

JUDGE_CACHE_NAME = "judge_cache.jsonl"

PROMPTS: dict[str, tuple[str, str]] = {
    "v1": (
        "You grade answers to questions about images. You are given the question, the reference answer(s) "
        "and a model's answer; you do not see the image. Reply with exactly one word: CORRECT if the model's "
        "answer gives the reference answer (or an equivalent one: a synonym, the same number, the same "
        "meaning) as its answer; INCORRECT otherwise, including when it names several candidates without "
        "choosing the reference, hedges, or denies the reference.",
        "Question: {question}\nReference answer(s): {references}\nModel's answer: {answer}\nVerdict:",
    ),
}

_VERDICT = re.compile(r"\b(incorrect|wrong|correct|right|yes|no)\b", re.IGNORECASE)


def parse_verdict(text: str) -> float | None:
    """1.0 for CORRECT (or right / yes), 0.0 for INCORRECT (or wrong / no): the first such word; else None."""
    match = _VERDICT.search(text)
    if match is None:
        return None
    return 1.0 if match.group(1).lower() in ("correct", "right", "yes") else 0.0


def agreement(judge: Sequence[float], rule: Sequence[float]) -> float | None:
    """Share of samples where the judge and the rule metric agree (each read as pass when ≥ 0.5)."""
    pairs = list(zip(judge, rule, strict=True))
    if not pairs:
        return None
    return sum((j >= 0.5) == (r >= 0.5) for j, r in pairs) / len(pairs)


class Judge:
    """Grades answers through ``config.endpoint``; verdicts are cached in ``folder/judge_cache.jsonl``.
    ``calls`` counts requests made, ``hits`` verdicts read from the cache."""

    def __init__(self, config: JudgeConfig, folder: Path, *, use_cache: bool = True) -> None:
        self.config = config
        self.system, self.template = PROMPTS[config.prompt_version]
        self._openai, self.client = openai_client(config.endpoint, config.api_key, config.timeout_s)
        self.path = Path(folder) / JUDGE_CACHE_NAME
        self.use_cache = use_cache
        self.calls = self.hits = 0
        self._verdicts: dict[str, float] = self._read() if use_cache else {}

    def _read(self) -> dict[str, float]:
        if not self.path.is_file():
            return {}
        verdicts = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                verdicts[str(row["key"])] = float(row["score"])
            except (ValueError, KeyError, TypeError):
                log.warning("skipping an unreadable line of %s", self.path)
        return verdicts

    def key(self, question: str, references: Sequence[str], answer: str) -> str:
        blob = json.dumps({"prompt": self.config.prompt_version, "server": openai_base_url(self.config.endpoint),
                           "model": self.config.model, "question": question, "references": list(references),
                           "answer": answer}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def grade(self, question: str, references: Sequence[str], answer: str) -> float:
        """1.0 when the judge says the answer is correct, else 0.0 (an unreadable verdict counts as 0.0)."""
        key = self.key(question, references, answer)
        if key in self._verdicts:
            self.hits += 1
            return self._verdicts[key]
        reply = self._ask(question, references, answer)
        score = parse_verdict(reply)
        if score is None:
            log.warning("judge reply %r is not a verdict; counted as incorrect", reply[:80])
            score = 0.0
        self._verdicts[key] = score
        if self.use_cache:
            append_line(self.path, json.dumps({"key": key, "prompt": self.config.prompt_version,
                                               "reply": reply, "score": score}, ensure_ascii=False))
        return score

    def _ask(self, question: str, references: Sequence[str], answer: str) -> str:
        user = self.template.format(question=question, references=" | ".join(references), answer=answer)
        self.calls += 1
        try:
            response = self.client.chat.completions.create(
                model=self.config.model, temperature=0.0, max_tokens=8,
                messages=[{"role": "system", "content": self.system}, {"role": "user", "content": user}])
        except self._openai.AuthenticationError:
            raise AuthError(f"the judge at {self.config.endpoint} rejected the API key",
                            "set judge.api_key or $OPENAI_API_KEY") from None
        except self._openai.APIStatusError as exc:
            raise FetchError(f"the judge at {self.config.endpoint} answered HTTP {exc.status_code}: {exc.message}",
                             "check judge.endpoint and judge.model") from None
        except self._openai.APIConnectionError as exc:
            raise FetchError(f"cannot reach the judge at {self.config.endpoint}: {exc}",
                             "is the grader's server running at that URL?") from None
        return response.choices[0].message.content or ""

    def close(self) -> None:
        self.client.close()
