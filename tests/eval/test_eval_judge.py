"""The optional judge against a real HTTP server speaking the OpenAI chat API (FastAPI under uvicorn in a
thread), called through the real ``openai`` SDK: verdicts, the versioned prompt, the per-sample cache and
the agreement with the rule metric."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from moesaic.errors import AuthError
from moesaic.eval import EvalConfig, evaluate
from moesaic.eval.judge import PROMPTS, agreement, parse_verdict

pytest.importorskip("uvicorn")
from fastapi import FastAPI, Header, HTTPException, Request  # noqa: E402 - after the skip


class Grader:
    """A lenient grader: CORRECT when a reference appears anywhere in the answer (substring, any case)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, object]] = []

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        def models() -> dict[str, object]:
            return {"object": "list", "data": [{"id": "grader", "object": "model", "created": 0, "owned_by": "t"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request, authorization: str | None = Header(None)) -> dict[str, object]:
            if authorization != "Bearer sk-judge":
                raise HTTPException(401, detail={"message": "bad key", "type": "auth", "code": "invalid_api_key"})
            body = await request.json()
            self.requests.append(body)
            user = body["messages"][-1]["content"]
            refs = re.search(r"Reference answer\(s\): (.*)\n", user).group(1).split(" | ")  # type: ignore[union-attr]
            answer = re.search(r"Model's answer: (.*)\nVerdict:", user, re.S).group(1)  # type: ignore[union-attr]
            verdict = "CORRECT" if any(r.lower() in answer.lower() for r in refs) else "INCORRECT"
            return {"id": "j", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": verdict + "."}}],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52}}

        return app


@pytest.fixture
def grader() -> Iterator[tuple[Grader, str]]:
    from moesaic.testing.server import running

    g = Grader()
    with running(g.app()) as url:
        yield g, url + "/v1"


def _data(tmp_path: Path, qa: Path, url: str, **judge: object) -> dict[str, object]:
    return {
        "models": [{"name": "verbose", "model": "verbose", "backend": "known"},
                   {"name": "lister", "model": "list", "backend": "known"}],
        "datasets": [{"name": "qa", "path": str(qa)}],
        "out": str(tmp_path / "out"), "warmup": 0,
        "judge": {"endpoint": url, "model": "grader", "api_key": "sk-judge", **judge},
    }


def test_judge_scores_agreement_and_cache(tmp_path: Path, known_backends, qa_dataset: Path,
                                          grader: tuple[Grader, str]) -> None:
    server, url = grader
    result = evaluate(EvalConfig.validated(_data(tmp_path, qa_dataset, url)))
    # refs: red / [Blue, navy] / [The green one, greens]. The lenient grader passes "The main colour is red …"
    # and "… blue …" (2/3) and, unlike contains_match, also the list "brown, black, red" and "… blue (15%)".
    verbose, lister = (result.model(n).datasets[0] for n in ("verbose", "lister"))
    assert verbose.metrics["judge"] == pytest.approx(2 / 3) and verbose.primary == pytest.approx(2 / 3)
    assert verbose.judge_agreement == 1.0
    assert lister.metrics["judge"] == pytest.approx(2 / 3) and lister.primary == 0.0
    assert lister.judge_agreement == pytest.approx(1 / 3)  # agree only on green (both fail)
    assert result.judge == {"model": "grader", "prompt_version": "v1", "calls": 6, "cache_hits": 0}
    first = server.requests[0]
    system, template = PROMPTS["v1"]
    assert first["model"] == "grader" and first["temperature"] == 0.0
    assert first["messages"][0] == {"role": "system", "content": system}  # type: ignore[index]
    assert first["messages"][1]["content"] == template.format(  # type: ignore[index]
        question="What colour is it?", references="red",
        answer="The main colour is red (100%), on a white background.")
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| qa | short answers | contains_match | lister | 0.000 | 0.000 (normalized_match) | 0.667 | 0.333 |" in md
    assert "Judge: grader (prompt v1)" in md
    assert "sk-judge" not in (tmp_path / "out" / "moesaic_config.yaml").read_text()
    # Re-run: answers and verdicts come from the caches; the grader is not asked again.
    again = evaluate(EvalConfig.validated(_data(tmp_path, qa_dataset, url)))
    assert len(server.requests) == 6 and again.judge["calls"] == 0 and again.judge["cache_hits"] == 6  # type: ignore[index]
    assert again.model("lister").datasets[0].judge_agreement == pytest.approx(1 / 3)
    # The same server reached without "/v1" is the same judge (same cache key).
    bare = evaluate(EvalConfig.validated(_data(tmp_path, qa_dataset, url.removesuffix("/v1"))))
    assert bare.judge["cache_hits"] == 6  # type: ignore[index]


def test_judge_is_off_by_default(tmp_path: Path, known_backends, qa_dataset: Path) -> None:
    data = _data(tmp_path, qa_dataset, "http://unused")
    del data["judge"]
    result = evaluate(EvalConfig.validated(data))
    assert result.judge is None and "judge" not in result.models[0].datasets[0].metrics
    assert not (tmp_path / "out" / "judge_cache.jsonl").exists()


def test_judge_bad_key_is_an_auth_error(tmp_path: Path, known_backends, qa_dataset: Path,
                                        grader: tuple[Grader, str]) -> None:
    _, url = grader
    with pytest.raises(AuthError, match="the judge at .* rejected the API key"):
        evaluate(EvalConfig.validated(_data(tmp_path, qa_dataset, url, api_key="wrong")))


@pytest.mark.parametrize(("reply", "score"), [("CORRECT", 1.0), ("Incorrect.", 0.0), ("correct - it says red", 1.0),
                                              ("The answer is wrong", 0.0), ("Yes", 1.0), ("maybe", None)])
def test_parse_verdict(reply: str, score: float | None) -> None:
    assert parse_verdict(reply) == score


def test_agreement() -> None:
    assert agreement([1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.6]) == 0.5
    assert agreement([], []) is None
