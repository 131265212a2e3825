"""Loading processors on machines without torchvision.

transformers 5.x gives processors that declare a video processor (Qwen3-VL, ...) a torchvision-only
video class: ``AutoProcessor.from_pretrained`` then raises ImportError even for image-only use, and
``ProcessorMixin`` cannot even type-check a video processor argument. :func:`load_processor` tries the
normal path first and, only on that ImportError, assembles the processor from its saved parts: PIL image
processor, tokenizer, and the family's real video-processor class (only needed for video, never called
for images).
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from transformers import ProcessorMixin

__all__ = ["ensure_video_processor_lookup", "load_processor", "video_processor_class"]

log = logging.getLogger(__name__)


def ensure_video_processor_lookup() -> None:
    """Let ``ProcessorMixin`` find ``VideoProcessorMixin`` (its class check fails without torchvision)."""
    from transformers import processing_utils
    from transformers.video_processing_utils import VideoProcessorMixin

    module = processing_utils.transformers_module
    if not hasattr(module, "VideoProcessorMixin"):
        setattr(module, "VideoProcessorMixin", VideoProcessorMixin)


def video_processor_class(class_name: str) -> type:
    """The real video processor class defined in transformers, not the top-level torchvision placeholder
    (the auto mappings blank the names out when torchvision is missing, so the source files are searched)."""
    import transformers.models as models

    needle = f"class {class_name}("
    for source in sorted(Path(models.__path__[0]).glob("*/video_processing_*.py")):
        if needle in source.read_text(encoding="utf-8"):
            module = importlib.import_module(f"transformers.models.{source.parent.name}.{source.stem}")
            return getattr(module, class_name)
    raise ImportError(f"transformers defines no video processor class named {class_name}")


def _image_processor(cfg: dict[str, Any]) -> Any:
    import transformers
    from transformers.utils import is_torchvision_available

    name = str(cfg["image_processor_type"]).removesuffix("Fast")
    if not is_torchvision_available() and not name.endswith("Pil") and hasattr(transformers, name + "Pil"):
        name += "Pil"
    return getattr(transformers, name).from_dict(dict(cfg))


def _assemble(path: Path, **kwargs: Any) -> "ProcessorMixin":
    import transformers
    from transformers import AutoTokenizer

    data: dict[str, Any] = json.loads((path / "processor_config.json").read_text(encoding="utf-8"))
    processor_cls = getattr(transformers, data.pop("processor_class"))
    parts: dict[str, Any] = {"tokenizer": AutoTokenizer.from_pretrained(path, **kwargs)}
    if "image_processor" in data:
        parts["image_processor"] = _image_processor(data.pop("image_processor"))
    if "video_processor" in data:
        video_cfg = dict(data.pop("video_processor"))
        parts["video_processor"] = video_processor_class(video_cfg["video_processor_type"]).from_dict(video_cfg)
    template = path / "chat_template.jinja"
    if template.is_file():
        data["chat_template"] = template.read_text(encoding="utf-8")
    ensure_video_processor_lookup()
    return processor_cls(**parts, **data)


def load_processor(model: str | Path, **kwargs: Any) -> "ProcessorMixin":
    """``AutoProcessor.from_pretrained(model)``, falling back to local assembly when torchvision is missing."""
    from transformers import AutoProcessor

    path = Path(model)
    try:
        processor = AutoProcessor.from_pretrained(model, **kwargs)
    except ImportError as exc:
        if "torchvision" not in str(exc).lower() or not (path / "processor_config.json").is_file():
            raise
        log.info("torchvision missing: assembling the processor of %s from its parts", path)
        processor = _assemble(path, **kwargs)
    _restore_chat_template(processor, path)
    return processor


def _restore_chat_template(processor: Any, path: Path) -> None:
    """Some processor classes (BLIP-2, GIT, ViLT) drop ``chat_template`` in ``__init__``; put it back."""
    if getattr(processor, "chat_template", None):
        return
    template = path / "chat_template.jinja"
    if template.is_file():
        processor.chat_template = template.read_text(encoding="utf-8")
    elif getattr(getattr(processor, "tokenizer", None), "chat_template", None):
        processor.chat_template = processor.tokenizer.chat_template
