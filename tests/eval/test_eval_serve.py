"""The same tiny Idefics3 evaluated twice: loaded locally, and behind ``moesaic serve`` as an endpoint model.
Greedy answers agree, so do the metrics; the endpoint run reports no local memory."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moesaic.eval import EvalConfig, evaluate

pytest.importorskip("uvicorn")


@pytest.fixture
def tiny_idefics3(eval_tiny_vlms: dict[str, Path]) -> Path:
    return eval_tiny_vlms["idefics3"]


@pytest.fixture
def served(tiny_idefics3: Path) -> Iterator[str]:
    """``moesaic serve``'s app around the tiny model, under uvicorn on a free loopback port."""
    import uvicorn

    from moesaic.backends.registry import load_backend
    from moesaic.serve.app import create_app
    from moesaic.serve.settings import ServeConfig

    settings = ServeConfig(model=str(tiny_idefics3), served_model_name="tiny-idefics3", api_key="sk-eval")
    app = create_app(settings, load_backend(str(tiny_idefics3)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.mark.slow
def test_local_and_served_model_agree(tmp_path: Path, tiny_idefics3: Path, served: str, qa_dataset: Path) -> None:
    config = EvalConfig.validated({
        "models": [
            {"name": "local", "model": str(tiny_idefics3), "dtype": "float32"},
            {"name": "served", "endpoint": served, "api_key": "sk-eval", "endpoint_model": "tiny-idefics3",
             "price_per_hour": 4.0},
        ],
        "datasets": [{"name": "qa", "path": str(qa_dataset)}],
        "metrics": ["exact_match", "anls", "token_f1"],
        "out": str(tmp_path / "out"),
        "generation": {"max_new_tokens": 6},
    })
    result = evaluate(config)
    preds = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    local = [p["answer"] for p in preds if p["model"] == "local"]
    remote = [p["answer"] for p in preds if p["model"] == "served"]
    assert len(local) == 3 and remote == local
    by_name = {m.name: m for m in result.models}
    assert by_name["served"].datasets[0].metrics == pytest.approx(by_name["local"].datasets[0].metrics)
    assert by_name["served"].kind == "endpoint" and by_name["served"].peak_rss_mb is None
    assert by_name["local"].peak_rss_mb is not None
    assert [p["completion_tokens"] for p in preds if p["model"] == "served"] == \
        [p["completion_tokens"] for p in preds if p["model"] == "local"]
    assert by_name["served"].cost_per_1k == pytest.approx(4.0 * by_name["served"].latency_mean_s * 1000 / 3600)
