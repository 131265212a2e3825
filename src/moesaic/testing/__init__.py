"""Test helpers shipped with the package: tiny random models per family, built offline."""

from moesaic.testing.tiny import (
    FAMILIES,
    IMAGE_SIZE,
    VILT_LABELS,
    copy_processor,
    make_tiny_model,
    tiny_config,
    tiny_model,
    tiny_processor,
)

__all__ = ["FAMILIES", "IMAGE_SIZE", "VILT_LABELS", "copy_processor", "make_tiny_model", "tiny_config", "tiny_model", "tiny_processor"]
