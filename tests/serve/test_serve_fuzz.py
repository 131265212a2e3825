"""Property-based requests generated from the server's own OpenAPI schema (schemathesis): whatever the
body, the server answers with a documented status, never a 500, and errors keep the OpenAI shape."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from serve_helpers import ColorBackend, running

from moesaic.serve.app import create_app
from moesaic.serve.settings import ServeConfig

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def fuzz_server():
    with running(create_app(ServeConfig(model="colors", request_timeout_s=5), ColorBackend())) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    return schemathesis.openapi.from_url(f"{fuzz_server}/openapi.json")


def check(case, seen: dict[str, set[int]]) -> None:
    response = case.call(timeout=10)
    seen.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
    assert response.status_code < 500, f"{case.method} {case.path}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


def test_no_server_errors_and_openai_shaped_errors(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/invocations", "/v1/models", "/ping"}
    seen: dict[str, set[int]] = {}
    for operation in operations:
        fuzz = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)(
            given(case=operation.as_strategy())(lambda case: check(case, seen)))
        fuzz()
    assert seen["GET /ping"] == {200}
    assert {400, 404} & seen["POST /v1/chat/completions"], seen  # malformed bodies were really sent
