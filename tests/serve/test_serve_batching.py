"""The batcher on its own: grouping by parameters, bounds, seeded sampling alone, timeouts, settings."""

from __future__ import annotations

import asyncio

import pytest
from serve_helpers import ColorBackend

from moesaic.backends.base import GenerationParams
from moesaic.errors import OverloadedError, RequestTimeoutError
from moesaic.inputs.messages import ChatMessage, Turn
from moesaic.serve.batching import Batcher
from moesaic.serve.service import approx_tokens
from moesaic.serve import settings as settings_module
from moesaic.serve.settings import ServeConfig, sagemaker_host


def turns(text: str) -> list[Turn]:
    return [Turn(role="user", parts=(text,))]


async def run_all(batcher: Batcher, jobs: list[tuple[str, GenerationParams]], timeout_s: float = 10) -> list:
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(turns(t), p, timeout_s) for t, p in jobs),
                                    return_exceptions=True)
    finally:
        await batcher.stop()


def test_requests_are_grouped_by_equal_parameters():
    backend = ColorBackend()
    greedy, short = GenerationParams(max_new_tokens=9), GenerationParams(max_new_tokens=2)
    jobs = [(f"q{i} x y", greedy) for i in range(4)] + [(f"s{i} x y", short) for i in range(2)]
    answers = asyncio.run(run_all(Batcher(backend, max_batch_size=8, wait_s=0.05), jobs))
    assert [a.text for a in answers] == [f"about q{i} x y" for i in range(4)] + [f"about s{i}" for i in range(2)]
    assert sorted(backend.batch_sizes) == [2, 4] and backend.batch_calls == 2


def test_batch_size_is_bounded_and_seeded_sampling_runs_alone():
    backend = ColorBackend()
    greedy, seeded = GenerationParams(), GenerationParams(temperature=0.8, seed=7)
    jobs = [(f"g{i}", greedy) for i in range(5)] + [(f"r{i}", seeded) for i in range(3)]
    asyncio.run(run_all(Batcher(backend, max_batch_size=2, wait_s=0.05), jobs))
    assert sorted(backend.batch_sizes) == [1, 1, 1, 1, 2, 2]  # 5 greedy in ≤2s, 3 seeded alone


@pytest.mark.parametrize("preparing", [0, 1])
def test_lone_request_waits_only_while_others_are_being_prepared(preparing):
    import time

    backend = ColorBackend()
    batcher = Batcher(backend, max_batch_size=8, wait_s=1.5, incoming=lambda: preparing)
    started = time.perf_counter()
    (answer,) = asyncio.run(run_all(batcher, [("alone", GenerationParams())]))
    elapsed = time.perf_counter() - started
    assert answer.text == "about alone"
    assert (elapsed < 0.75) if preparing == 0 else (elapsed >= 1.5), elapsed


def test_backend_without_batching_gets_one_request_per_call():
    backend = ColorBackend()
    backend.can_batch = False
    asyncio.run(run_all(Batcher(backend, max_batch_size=8, wait_s=0.01), [(f"q{i}", GenerationParams()) for i in range(3)]))
    assert backend.batch_sizes == [1, 1, 1] and backend.batch_calls == 0


def test_queue_bound_and_timeout_skip_abandoned_work():
    backend = ColorBackend(delay_s=0.3)

    async def scenario() -> tuple[list, int]:
        batcher = Batcher(backend, max_batch_size=1, wait_s=0, queue_size=2)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(turns("first"), GenerationParams(), 5))
        await asyncio.sleep(0.05)  # the worker took it; the queue is empty again
        waiting = [asyncio.ensure_future(batcher.submit(turns(f"w{i}"), GenerationParams(), 0.1)) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError, match="2 requests are already waiting"):
            await batcher.submit(turns("third"), GenerationParams(), 5)
        results = await asyncio.gather(first, *waiting, return_exceptions=True)
        await asyncio.sleep(0.4)
        calls = backend.generate_calls
        await batcher.stop()
        return results, calls

    results, calls = asyncio.run(scenario())
    assert results[0].text == "about first"
    assert all(isinstance(r, RequestTimeoutError) and "0.1 s" in r.message for r in results[1:])
    assert calls == 1  # the timed-out requests never reached the model


def test_settings_defaults_flags_and_token_estimate(monkeypatch, tmp_path):
    cfg = ServeConfig()
    assert (cfg.model, cfg.port, cfg.host, cfg.model_name) == ("starter", 8080, "127.0.0.1", "starter")
    assert sagemaker_host(cfg) == "127.0.0.1"
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "8080")
    assert sagemaker_host(cfg) == "0.0.0.0"
    assert sagemaker_host(ServeConfig(host="127.0.0.1")) == "127.0.0.1"  # an explicit --host wins
    monkeypatch.delenv("SAGEMAKER_BIND_TO_PORT")
    monkeypatch.setattr(settings_module, "SAGEMAKER_ROOT", tmp_path)  # as if /opt/ml existed
    assert sagemaker_host(cfg) == "0.0.0.0"
    flags = ServeConfig.load(None, {"allow_host": "127.0.0.1, 10.0.0.0/8", "vllm_args": "--max-model-len 4096",
                                    "max_tokens_limit": 32})
    assert flags.allow_host == ["127.0.0.1", "10.0.0.0/8"] and flags.vllm_args == ["--max-model-len", "4096"]
    assert flags.effective_default_max_tokens == 32
    monkeypatch.setenv("MOESAIC_API_KEY", "from-env")
    assert cfg.resolved_api_key() == "from-env"
    msg = ChatMessage(role="user", content="abcdefgh é")  # role 1 + 11 UTF-8 bytes → 3 tokens
    assert approx_tokens([msg, msg]) == 8
    empty = ChatMessage(role="user", content=[{"type": "text", "text": ""}, {"type": "text", "text": ""}])
    assert approx_tokens([empty] * 3) == 9  # empty messages and parts are not free


def test_bad_allow_host_is_a_config_error():
    from moesaic.errors import ConfigError
    from moesaic.serve.app import create_app

    with pytest.raises(ConfigError, match="invalid --allow-host") as info:
        create_app(ServeConfig(model="colors", allow_host=["10.0.0.0/99"]), ColorBackend())
    assert "CIDR" in str(info.value)


def test_one_poisoned_request_fails_alone():
    backend = ColorBackend()
    jobs = [("fine one", GenerationParams()), ("boom", GenerationParams()), ("fine two", GenerationParams())]
    results = asyncio.run(run_all(Batcher(backend, max_batch_size=8, wait_s=0.05), jobs))
    assert results[0].text == "about fine one" and results[2].text == "about fine two"
    assert isinstance(results[1], RuntimeError)
    assert backend.batch_sizes[0] == 3 and backend.generate_calls == 3  # the batch failed, then one by one
