"""Bounded schemathesis fuzzing of /openapi.json against the real HF backend of a tiny VLM, with an API key
enforced. It adds to tests/serve/test_serve_fuzz.py (schema-valid bodies, a stub backend, no key): here
*negative* (schema-violating) data too, every operation, and the key check on every response.

Bounded for CI: ``MOESAIC_FUZZ_EXAMPLES`` examples per operation and mode (default 60: about 250 requests;
operations without a body or parameters have one possible request and no negative one).
The longer run documented in SECURITY.md sets it to 1000 and prints the counts (``-s``).
"""

from __future__ import annotations

import os

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from reliability_helpers import running

from moesaic.serve.app import create_app
from moesaic.serve.settings import ServeConfig

schemathesis = pytest.importorskip("schemathesis")
pytest.importorskip("moesaic.backends.hf")
from schemathesis.generation import GenerationMode  # noqa: E402

KEY = "fuzz-key"
EXAMPLES = int(os.environ.get("MOESAIC_FUZZ_EXAMPLES", "60"))
PUBLIC = {"/ping", "/health", "/openapi.json", "/docs", "/", "/playground", "/metrics"}


@pytest.fixture(scope="module")
def fuzz_target(tiny_model_dir):
    from moesaic.backends.registry import load_backend

    folder = tiny_model_dir("idefics3")
    settings_ = ServeConfig(model="tiny", api_key=KEY, max_tokens_limit=8, default_max_tokens=4,
                            max_prompt_tokens=256, request_timeout_s=20, image_timeout_s=2)
    with running(create_app(settings_, load_backend(str(folder)))) as url:
        yield url, schemathesis.openapi.from_url(f"{url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"})


def test_fuzz_positive_and_negative_with_api_key(fuzz_target):
    url, schema = fuzz_target
    seen: dict[str, int] = {"requests": 0, "5xx": 0, "2xx": 0, "4xx": 0}
    failures: list[str] = []

    def check(case) -> None:  # type: ignore[no-untyped-def]
        response = case.call(timeout=30, headers={"Authorization": f"Bearer {KEY}"})
        seen["requests"] += 1
        status = response.status_code
        bucket = f"{status // 100}xx"
        seen[bucket] = seen.get(bucket, 0) + 1
        if status >= 500:
            failures.append(f"{case.method} {case.path}: {status} {response.text[:200]}")
        elif status >= 400 and status != 499:
            error = response.json()["error"]
            if set(error) != {"message", "type", "param", "code"} or not error["message"]:
                failures.append(f"{case.method} {case.path}: not OpenAI-shaped: {response.text[:200]}")

    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/invocations"}
    for operation in operations:
        has_input = any(len(list(group)) for group in (operation.body, operation.query, operation.headers))
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_input else (GenerationMode.POSITIVE,)
        for mode in modes:  # nothing to violate without a body or parameters (hypothesis: Unsatisfiable)
            run = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                           database=None)(given(case=operation.as_strategy(generation_mode=mode))(check))
            run()
    print(f"fuzz: {EXAMPLES} examples per operation and mode: {seen}")
    assert not failures, failures[:5]
    assert seen["5xx"] == 0, seen
    assert seen["requests"] >= min(200, EXAMPLES * 4), seen
    assert seen["4xx"] > 0 and seen["2xx"] > 0, seen  # refusals and real answers were both exercised
    # every protected route still refuses a request without the key, after all that
    for path in ("/v1/chat/completions", "/invocations"):
        r = httpx.post(f"{url}{path}", json={"question": "hi"}, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 401
