"""Test helpers shipped with the package: tiny random models per family, built offline."""

from moesaic.testing.tiny import (
    FAMILIES,
    TEXT_FAMILIES,
    IMAGE_SIZE,
    VILT_LABELS,
    copy_processor,
    make_tiny_model,
    make_tiny_text_model,
    tiny_config,
    tiny_model,
    tiny_processor,
    tiny_text_model,
)

__all__ = ["FAMILIES", "TEXT_FAMILIES", "make_tiny_text_model", "tiny_text_model", "IMAGE_SIZE", "VILT_LABELS", "copy_processor", "make_tiny_model", "tiny_config", "tiny_model", "tiny_processor"]
