"""Writing safetensors shards one tensor at a time.

A safetensors file is an 8-byte little-endian header length, a JSON header (name → dtype, shape, byte
range) and the raw bytes. Every tensor's shape and dtype is known before any data is read, so the header
is written first and each tensor is produced, written and dropped in turn: memory holds one tensor, not a
shard. Files above ``max_shard_bytes`` split into ``model-0000i-of-0000n.safetensors`` with the
``model.safetensors.index.json`` transformers reads.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["PlannedTensor", "write_shards", "DTYPE_NAMES"]

DTYPE_NAMES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    produce: Callable[[], torch.Tensor]  # called once, when the tensor's turn to be written comes

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty(0, dtype=self.dtype).element_size()


def _header(tensors: list[PlannedTensor]) -> bytes:
    meta: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        meta[t.name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(meta, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
    return struct.pack("<Q", len(raw)) + raw


def _write_file(path: Path, tensors: list[PlannedTensor]) -> None:
    with path.open("wb") as fh:
        fh.write(_header(tensors))
        for t in tensors:
            value = t.produce()
            if tuple(value.shape) != t.shape:
                raise ValueError(f"{t.name}: produced shape {tuple(value.shape)}, planned {t.shape}")
            value = value.to(t.dtype).contiguous()
            if value.numel():
                fh.write(value.reshape(-1).view(torch.uint8).numpy().tobytes())
            del value


def write_shards(folder: Path, tensors: list[PlannedTensor], max_shard_bytes: int = 5 * 1024**3) -> list[str]:
    """Write ``tensors`` (in order) into ``folder``; returns the file names written."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    if len(shards) == 1:
        _write_file(folder / "model.safetensors", shards[0])
        return ["model.safetensors"]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards, strict=True):
        _write_file(folder / name, shard)
        weight_map.update({t.name: name for t in shard})
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return [*names, "model.safetensors.index.json"]
