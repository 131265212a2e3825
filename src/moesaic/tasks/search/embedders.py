"""Pluggable embedders for the image index: images and text queries land in one vector space.

- ``starter`` (default, offline): the starter experts describe the image (product type and colours of
  its own pixels, top tags, OCR text) in a caption string, which MiniLM-L6 embeds (384-d); the query is
  embedded by the same MiniLM, so text search compares captions with queries.
- ``clip:<hub id or folder>`` (or ``siglip:…``): a dual-encoder loaded through transformers ``AutoModel`` /
  ``AutoProcessor``; images and text use ``get_image_features`` / ``get_text_features``.

Every vector is L2-normalised, so cosine distance ranks them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

from moesaic.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["ImageEmbedder", "CaptionEmbedder", "DualEncoderEmbedder", "make_embedder", "Described"]


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class Described:
    """What indexing one image produced: its vector, a caption and filterable attributes."""

    def __init__(self, vector: np.ndarray, caption: str, attrs: dict[str, list[str]]) -> None:
        self.vector, self.caption, self.attrs = vector, caption, attrs


class ImageEmbedder(ABC):
    name: str
    dim: int

    @abstractmethod
    def describe(self, image: "Image.Image", extra: dict[str, str] | None = None) -> Described:
        """Embed one image and derive its caption and attributes."""

    @abstractmethod
    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Text queries → (n, dim), L2-normalised."""


def image_attributes(image: "Image.Image", tags: list[tuple[str, float]] | None) -> dict[str, list[str]]:
    """Filterable attributes: colour names of the product pixels, and type/category/tags when tags are known."""
    from moesaic.tasks.product.starter import product_colours, product_type

    attrs: dict[str, list[str]] = {"colour": product_colours(image, k=2)}
    if tags:
        category, item_type = product_type(tags)
        attrs.update(category=[category], type=[item_type], tag=[label for label, _ in tags[:3]])
    return attrs


class CaptionEmbedder(ImageEmbedder):
    """Starter experts → caption → MiniLM."""

    name = "starter"

    def __init__(self, ocr: bool = True) -> None:
        from moesaic.experts.embed import DIM

        self.dim, self.ocr = DIM, ocr

    def caption(self, image: "Image.Image") -> tuple[str, dict[str, list[str]]]:
        from moesaic.experts.tagger import Tagger

        tags = [(t.label, float(t.score)) for t in Tagger.shared().tag(image, top_k=5)]
        attrs = image_attributes(image, tags)
        words = [f"{' and '.join(attrs['colour'])} {attrs['type'][0]}", f"({attrs['category'][0]})"]
        words.append("showing " + ", ".join(label for label, _ in tags[:3]))
        if self.ocr:
            from moesaic.experts.ocr import OCR

            text = " ".join(line.text for line in OCR.shared().read(image))[:200]
            if text:
                words.append(f'with the text "{text}"')
                attrs["text"] = [text]
        return " ".join(words), attrs

    def describe(self, image: "Image.Image", extra: dict[str, str] | None = None) -> Described:
        caption, attrs = self.caption(image)
        return Described(self.embed_text([caption])[0], caption, attrs)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        from moesaic.experts.embed import Embedder

        return _normalise(Embedder.shared().encode(texts))  # (n, 384)


class DualEncoderEmbedder(ImageEmbedder):
    """CLIP / SigLIP style models with ``get_image_features`` and ``get_text_features``."""

    def __init__(self, model: str, kind: str = "clip") -> None:
        import torch
        from transformers import AutoModel, AutoProcessor

        try:
            self.model = AutoModel.from_pretrained(model).eval()
            self.processor = AutoProcessor.from_pretrained(model)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the embedding model {model!r}: {exc}",
                                 "pass a local folder or cached hub id of a CLIP/SigLIP model") from None
        if not hasattr(self.model, "get_image_features"):
            raise ConfigError(f"{model!r} is not a dual encoder (no get_image_features)",
                              "use a CLIP or SigLIP checkpoint, or --embedder starter")
        self.name = f"{kind}:{model}"
        with torch.inference_mode():
            self.dim = int(self.embed_text(["probe"]).shape[1])

    @staticmethod
    def _pooled(out: object) -> np.ndarray:
        tensor = getattr(out, "pooler_output", out)  # transformers 5 returns an output object
        return tensor.float().numpy()  # type: ignore[union-attr]

    def describe(self, image: "Image.Image", extra: dict[str, str] | None = None) -> Described:
        import torch

        inputs = self.processor(images=[image], return_tensors="pt")
        with torch.inference_mode():
            vec = _normalise(self._pooled(self.model.get_image_features(pixel_values=inputs["pixel_values"])))
        return Described(vec[0], "", image_attributes(image, None))  # vec: (1, dim)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        import torch

        # SigLIP was trained on max-length padded text; CLIP pads to the longest text
        siglip = str(getattr(self.model.config, "model_type", "")).startswith("siglip")
        inputs = self.processor(text=texts, return_tensors="pt", padding="max_length" if siglip else True)
        keep = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            return _normalise(self._pooled(self.model.get_text_features(**keep)))  # (n, dim)


def make_embedder(spec: str, *, ocr: bool = True) -> ImageEmbedder:
    """``starter`` or ``clip:<model>`` / ``siglip:<model>``."""
    kind, _, target = spec.partition(":")
    if spec == "starter":
        return CaptionEmbedder(ocr=ocr)
    if kind in ("clip", "siglip") and target:
        return DualEncoderEmbedder(target, kind)
    raise ConfigError(f"unknown embedder {spec!r}", "use 'starter' or 'clip:<hub id or folder>'", param="embedder")
