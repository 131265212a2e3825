"""Streaming for :class:`~moesaic.backends.hf.HFBackend`: ``generate`` runs on a worker thread feeding a
``TextIteratorStreamer``; deltas are emitted once they cannot turn into a stop string or trailing space,
so the deltas always concatenate to the final answer's text."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from moesaic.backends.base import GenerationParams, StreamChunk, apply_stop

if TYPE_CHECKING:  # pragma: no cover
    from transformers import BatchFeature

    from moesaic.backends.hf import HFBackend

__all__ = ["stream_generate", "held_back", "CancelCriteria"]

log = logging.getLogger(__name__)


def held_back(text: str, stop: tuple[str, ...]) -> int:
    """How many trailing characters of ``text`` must wait: a possible start of a stop string, or spaces."""
    hold = len(text) - len(text.rstrip())
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return hold


class CancelCriteria:
    """A stopping criterion that ends every sequence once ``event`` is set (the consumer went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        # (batch,) bool: True everywhere once cancelled
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _worker(backend: "HFBackend", batch: "BatchFeature", params: GenerationParams, streamer: Any,
            result: dict[str, Any], cancel: threading.Event) -> None:
    try:
        result["ids"] = backend._run_generate(batch, params, streamer, cancel)
    except BaseException as exc:  # noqa: BLE001 - re-raised on the caller's thread
        result["error"] = exc
        streamer.end()


def stream_generate(backend: "HFBackend", batch: "BatchFeature", params: GenerationParams) -> Iterator[StreamChunk]:
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(backend.tokenizer, skip_prompt=True, skip_special_tokens=True)
    result: dict[str, Any] = {}
    cancel = threading.Event()
    thread = threading.Thread(target=_worker, args=(backend, batch, params, streamer, result, cancel), daemon=True)
    thread.start()
    raw, sent, finished = "", "", False
    try:
        for piece in streamer:
            raw += piece
            text, cut = apply_stop(raw, params.stop)
            text = text.lstrip()
            ready = text if cut else text[: len(text) - held_back(text, params.stop)]
            if len(ready) > len(sent) and ready.startswith(sent):
                yield StreamChunk(text=ready[len(sent) :])
                sent = ready
            if cut:
                break
        else:
            finished = True  # the streamer's end signal is consumed: draining again would block forever
    finally:
        # Closing the generator early (a client disconnected) must free the model at the next step.
        if not finished and "ids" not in result and "error" not in result and thread.is_alive():
            cancel.set()
            for _ in streamer:  # drain so the worker never blocks on a full queue
                pass
        thread.join()
    if "error" in result:
        raise result["error"]
    answer = backend._answers(batch, result["ids"], params)[0]
    if answer.text.startswith(sent):
        if len(answer.text) > len(sent):
            yield StreamChunk(text=answer.text[len(sent) :])
    else:  # the streamed text is what the client saw; keep the answer consistent with it
        log.warning("streamed text differs from the final decode; answering with the streamed text")
        answer = answer.model_copy(update={"text": sent})
    yield StreamChunk(answer=answer)
