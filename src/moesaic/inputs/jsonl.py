"""JSON Lines files, read the same way everywhere (datasets, gate samples, batch inputs, fine-tuning data)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moesaic.errors import InputError, MoesaicError

__all__ = ["iter_jsonl"]


def iter_jsonl(path: str | Path, error: type[MoesaicError] = InputError) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, parsed value)`` for each non-blank line of ``path``.

    A line that is not JSON raises ``error`` naming the file and line (numbered from 1).
    """
    p = Path(path)
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{p}:{n}: not valid JSON ({exc.msg})", "write one JSON object per line") from None
