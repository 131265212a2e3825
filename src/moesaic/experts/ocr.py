"""Text in images: rapidocr 3.10 with the PP-OCRv6 small models it ships (choosing other models would
try to download them, which fails offline, so only the defaults are used).

Lines come back in reading order: grouped into rows by vertical overlap, rows top to bottom, lines in a
row left to right. Low-confidence lines and "text" boxes that cover nearly the whole image (a detector
artefact on photos without text) are dropped. About 0.7 s per image on 2 CPU cores.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from moesaic.errors import ModelLoadError, missing_extra
from moesaic.experts._shared import shared_instance
from moesaic.inputs.shape import fit_shape, fitted_size, padding_offset

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = ["TextLine", "OCR", "reading_order", "row_groups", "joined_rows"]

log = logging.getLogger(__name__)

MIN_SCORE = 0.6
MAX_BOX_SHARE = 0.9  # a box covering more of the image than this is not a text line
# rapidocr shrinks the longest side to 2000, then grows the shortest to 30 and (detector) to 736, scaling the
# other side along: a 1×1000 strip became a 736×690 000 float tensor. Images are fitted first (longest side
# ≤ MAX_SIDE, aspect ≤ MAX_ASPECT, letterboxed on white), so the detector input is at most 736 × 2 944
# (a 4:3 photo gives 736 × 981).
MAX_SIDE = 2000
MAX_ASPECT = 4


@dataclass(frozen=True)
class TextLine:
    text: str
    score: float
    box: list[list[float]] = field(default_factory=list)  # 4 corners [[x, y], ...], clockwise from top-left

    @property
    def top(self) -> float:
        return min(p[1] for p in self.box) if self.box else 0.0

    @property
    def bottom(self) -> float:
        return max(p[1] for p in self.box) if self.box else 0.0

    @property
    def left(self) -> float:
        return min(p[0] for p in self.box) if self.box else 0.0


def _span(box: list[list[float]]) -> tuple[float, float]:
    ys = [p[1] for p in box] or [0.0]
    return min(ys), max(ys)


def row_groups(boxes: list[list[list[float]]]) -> list[list[int]]:
    """Indices of ``boxes`` grouped into rows (a box joins a row when it overlaps the row's height by
    half), rows top to bottom, boxes in a row left to right."""
    rows: list[list[int]] = []
    for i in sorted(range(len(boxes)), key=lambda j: _span(boxes[j])[0]):
        top, bottom = _span(boxes[i])
        for row in rows:
            r_top, r_bottom = min(_span(boxes[j])[0] for j in row), max(_span(boxes[j])[1] for j in row)
            overlap = min(r_bottom, bottom) - max(r_top, top)
            if overlap >= 0.5 * min(max(bottom - top, 1.0), max(r_bottom - r_top, 1.0)):
                row.append(i)
                break
        else:
            rows.append([i])
    return [sorted(row, key=lambda j: min((p[0] for p in boxes[j]), default=0.0)) for row in rows]


def reading_order(lines: list[TextLine]) -> list[TextLine]:
    """Rows top to bottom, then left to right (see :func:`row_groups`)."""
    return [lines[i] for row in row_groups([ln.box for ln in lines]) for i in row]


def joined_rows(texts: list[str], boxes: list[list[list[float]]]) -> list[str]:
    """One string per row: the texts of a row joined by spaces (OCR often splits a line into words)."""
    return [" ".join(texts[i] for i in row) for row in row_groups(boxes)]


def _box_share(box: list[list[float]], width: int, height: int) -> float:
    xs, ys = [p[0] for p in box], [p[1] for p in box]
    return (max(xs) - min(xs)) * (max(ys) - min(ys)) / max(width * height, 1)


def _engine_params() -> dict[str, object]:
    """rapidocr settings: quiet logs; ONNX Runtime threads capped by ``OMP_NUM_THREADS`` when it is set
    (its spinning threads slow everything down on a shared, busy machine)."""
    params: dict[str, object] = {"Global.log_level": "warning"}
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) >= 1:
        params["EngineConfig.onnxruntime.intra_op_num_threads"] = min(int(threads), os.cpu_count() or 1)
    return params


def _resize_errors() -> tuple[type[BaseException], ...]:
    try:
        from rapidocr.ch_ppocr_det.utils import ResizeImgError as DetResizeError
        from rapidocr.utils.process_img import ResizeImgError
    except ImportError:  # pragma: no cover - another rapidocr layout
        return ()
    return (ResizeImgError, DetResizeError)


def _in_original(box: list[list[float]], fitted: "Image.Image", original: "Image.Image") -> list[list[float]]:
    """A box found in the fitted image, in the coordinates of the original (undo padding, then scaling)."""
    content = fitted_size(original.size, max_side=MAX_SIDE, max_aspect=MAX_ASPECT)[0]
    left, top = padding_offset(content, fitted.size)
    sx, sy = original.width / content[0], original.height / content[1]
    return [[(float(x) - left) * sx, (float(y) - top) * sy] for x, y in box]


class OCR:
    """Read the text lines of an image. ``OCR.shared()`` loads the ONNX models once per process."""

    name = "ocr"

    def __init__(self, min_score: float = MIN_SCORE) -> None:
        try:
            from rapidocr import RapidOCR
        except ImportError:
            raise missing_extra("rapidocr", "all") from None
        # rapidocr warns "text detection result is empty" for every photo without text: normal here
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        try:
            self.engine = RapidOCR(params=_engine_params())
        except Exception as exc:  # rapidocr raises plain exceptions for missing/corrupt models
            raise ModelLoadError(
                f"could not start rapidocr: {exc}",
                "reinstall it with its shipped models: pip install --force-reinstall 'rapidocr==3.10.*'",
            ) from None
        logging.getLogger("RapidOCR").setLevel(logging.ERROR)  # it resets its level on start
        self.min_score = min_score
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> "OCR":
        return shared_instance(("ocr",), cls)

    def read(self, image: "Image.Image") -> list[TextLine]:
        """Text lines with confidence and box, in reading order."""
        original = image.convert("RGB")
        rgb = fit_shape(original, max_side=MAX_SIDE, max_aspect=MAX_ASPECT)
        arr = np.asarray(rgb)  # (height, width, 3) uint8, RGB
        with self._lock:
            try:
                out = self.engine(arr)
            except _resize_errors() as exc:  # a shape rapidocr cannot scale (very small images): no text
                log.warning("OCR skipped a %dx%d image: %s", rgb.width, rgb.height, exc)
                return []
        if out.txts is None or out.boxes is None:
            return []
        width, height = rgb.size
        lines = []
        for text, score, box in zip(out.txts, out.scores, out.boxes.tolist(), strict=True):
            text = str(text).strip()
            if not text or float(score) < self.min_score:
                continue
            if _box_share(box, width, height) > MAX_BOX_SHARE:
                continue
            lines.append(TextLine(text=text, score=round(float(score), 4), box=_in_original(box, rgb, original)))
        return reading_order(lines)
