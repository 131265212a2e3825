"""Processor builders for the tiny models: a family's real processor class around an offline tokenizer
and a PIL image processor sized for 32 px images in 8 px patches (no torchvision needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase, ProcessorMixin

__all__ = [
    "idefics3_processor",
    "idefics2_processor",
    "mistral3_processor",
    "llava_onevision_processor",
    "internvl_processor",
    "mllama_processor",
    "qwen3_5_processor",
    "llava_processor",
    "qwen3_vl_processor",
    "blip2_processor",
    "vilt_processor",
    "git_processor",
]

_SIZE = 32
_PATCH = 8
_SQUARE = {"height": _SIZE, "width": _SIZE}


def idefics3_processor(tokenizer: "PreTrainedTokenizerBase", chat_template: str) -> "ProcessorMixin":
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    images = Idefics3ImageProcessorPil(
        do_image_splitting=False, size={"longest_edge": _SIZE}, max_image_size={"longest_edge": _SIZE}
    )
    # (32 / 8)^2 patches, pixel-shuffled by scale_factor 2 -> 4 image tokens per image
    seq_len = (_SIZE // _PATCH) ** 2 // 4
    return Idefics3Processor(images, tokenizer, image_seq_len=seq_len, chat_template=chat_template)


def idefics2_processor(tokenizer: "PreTrainedTokenizerBase", chat_template: str) -> "ProcessorMixin":
    from transformers import Idefics2ImageProcessorPil, Idefics2Processor

    images = Idefics2ImageProcessorPil(do_image_splitting=False, size={"longest_edge": _SIZE, "shortest_edge": _SIZE})
    # the perceiver resampler turns any image into resampler_n_latents (4) tokens
    return Idefics2Processor(images, tokenizer, image_seq_len=4, chat_template=chat_template)


def _tokenizer_only(tokenizer: "PreTrainedTokenizerBase", chat_template: str) -> "PreTrainedTokenizerBase":
    """Text-only stand-in for hosts whose image processors need torchvision (tiny tests feed token ids)."""
    tokenizer.chat_template = chat_template
    return tokenizer


mistral3_processor = _tokenizer_only  # PixtralProcessor needs torchvision
llava_onevision_processor = _tokenizer_only
internvl_processor = _tokenizer_only
mllama_processor = _tokenizer_only
qwen3_5_processor = _tokenizer_only  # its video processor needs torchvision


def llava_processor(tokenizer: "PreTrainedTokenizerBase", chat_template: str) -> "ProcessorMixin":
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    images = CLIPImageProcessorPil(size={"shortest_edge": _SIZE}, crop_size=_SQUARE)
    return LlavaProcessor(
        images,
        tokenizer,
        patch_size=_PATCH,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLIP [CLS] token, dropped by the "default" strategy
        chat_template=chat_template,
    )


def qwen3_vl_processor(tokenizer: "PreTrainedTokenizerBase", chat_template: str) -> "ProcessorMixin":
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLProcessor

    from moesaic.backends.compat import ensure_video_processor_lookup, video_processor_class

    # factor = patch 8 * merge 2 = 16 px per image token; 32x32 -> 4 tokens, at most 64x64 -> 16 tokens
    pixels = {"shortest_edge": _SIZE * _SIZE, "longest_edge": 64 * 64}
    images = Qwen2VLImageProcessorPil(size=pixels, patch_size=_PATCH, merge_size=2, temporal_patch_size=2)
    # the real class (video processing itself needs torchvision; images never touch it)
    videos = video_processor_class("Qwen3VLVideoProcessor")(
        size=pixels, patch_size=_PATCH, merge_size=2, temporal_patch_size=2
    )
    ensure_video_processor_lookup()
    return Qwen3VLProcessor(images, tokenizer, videos, chat_template=chat_template)


def blip2_processor(tokenizer: "PreTrainedTokenizerBase", chat_template: str) -> "ProcessorMixin":
    from transformers import Blip2Processor, BlipImageProcessorPil

    images = BlipImageProcessorPil(size=_SQUARE)
    processor = Blip2Processor(images, tokenizer, num_query_tokens=4)
    processor.chat_template = chat_template
    return processor


def vilt_processor(tokenizer: "PreTrainedTokenizerBase", chat_template: str) -> "ProcessorMixin":
    from transformers import ViltImageProcessorPil, ViltProcessor

    images = ViltImageProcessorPil(size={"shortest_edge": _SIZE}, size_divisor=_SIZE)
    processor = ViltProcessor(images, tokenizer)
    processor.chat_template = chat_template
    return processor


def git_processor(tokenizer: "PreTrainedTokenizerBase", chat_template: str) -> "ProcessorMixin":
    from transformers import CLIPImageProcessorPil, GitProcessor

    images = CLIPImageProcessorPil(size={"shortest_edge": _SIZE}, crop_size=_SQUARE)
    processor = GitProcessor(images, tokenizer)
    processor.chat_template = chat_template
    return processor
