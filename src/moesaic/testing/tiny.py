"""Tiny random models per family, built offline, for tests and examples.

``tiny_config(family)`` gives a random-weight-sized config (hidden 32-64, 1-2 layers, 32 px images),
``tiny_processor(family)`` the matching processor (offline tokenizer, tiny image processor, chat template),
and ``make_tiny_model(family, path)`` saves both so that ``AutoProcessor`` and the family's model class
(``AutoModelForImageTextToText`` for the generative VLMs) load them back. Token ids in the configs are
read from the tokenizer, so they always agree.

Idefics3 and LLaVA use a Llama text model (gate_proj/up_proj/down_proj MLP), Idefics2 and Mistral3 a
Mistral one, LLaVA-OneVision and InternVL a Qwen2 one, Mllama its own text model with a cross-attention
layer, Qwen3.5 its hybrid (linear + full attention) text model, Qwen3-VL its own text config, BLIP-2 an OPT text model, ViLT and GIT their own BERT-style encoders.
Mistral3, LLaVA-OneVision, InternVL, Mllama and Qwen3.5 ship a tokenizer with a chat template only (their image processors
need torchvision): their tests feed token ids. ``make_tiny_text_model`` builds text-only decoders
(Llama, Mistral, Qwen2, Phi-3 with its fused ``gate_up_proj``, GLM, Cohere).
"""

from __future__ import annotations

from functools import lru_cache
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moesaic.errors import ConfigError
from moesaic.testing.tokenizers import CHAT_TEMPLATES, bpe_tokenizer, wordpiece_tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

__all__ = [
    "FAMILIES", "IMAGE_SIZE", "VILT_LABELS", "copy_processor", "tiny_config", "tiny_processor", "tiny_model",
    "make_tiny_model", "TEXT_FAMILIES", "tiny_text_model", "make_tiny_text_model",
]

FAMILIES: tuple[str, ...] = ("idefics3", "llava", "qwen3_vl", "blip2", "vilt", "git", "idefics2", "mistral3",
                             "llava_onevision", "internvl", "mllama", "qwen3_5")
TEXT_FAMILIES: tuple[str, ...] = ("llama", "mistral", "qwen2", "phi3", "glm", "cohere")
IMAGE_SIZE = 32  # pixels; every tiny vision tower takes 32x32 images in 8x8 patches
PATCH = 8
VILT_LABELS: tuple[str, ...] = ("yes", "no", "cat", "dog", "red", "blue", "two", "three")

_ROWS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
_SPECIALS: dict[str, list[str]] = {
    "idefics3": ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>",
                 "<global-img>", *_ROWS],
    "llava": ["<pad>", "<s>", "</s>", "<unk>", "<image>"],
    "qwen3_vl": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"],
    "blip2": ["<pad>", "</s>", "<unk>", "<image>"],
    "idefics2": ["<unk>", "<s>", "</s>", "<end_of_utterance>", "<image>", "<fake_token_around_image>"],
    "mistral3": ["<pad>", "<s>", "</s>", "<unk>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"],
    "llava_onevision": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
    "internvl": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"],
    "qwen3_5": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"],
    "mllama": ["<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>", "<|image|>", "<|start_header_id|>",
               "<|end_header_id|>"],
}
_ROLES: dict[str, dict[str, str | None]] = {  # bos / eos / pad / unk per BPE family
    "idefics3": {"bos": "<|im_start|>", "eos": "<end_of_utterance>", "pad": "<|endoftext|>", "unk": None},
    "llava": {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"},
    "qwen3_vl": {"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": None},
    "blip2": {"bos": "</s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"},
    "idefics2": {"bos": "<s>", "eos": "<end_of_utterance>", "pad": "<unk>", "unk": "<unk>"},
    "mistral3": {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>"},
    "llava_onevision": {"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": None},
    "internvl": {"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": None},
    "qwen3_5": {"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": None},
    "mllama": {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": "<|finetune_right_pad_id|>", "unk": None},
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ConfigError(f"unknown tiny model family {family!r}", f"choose one of: {', '.join(FAMILIES)}")


def _tokenizer(family: str) -> "PreTrainedTokenizerBase":
    if family in ("vilt", "git"):
        return wordpiece_tokenizer(VILT_LABELS if family == "vilt" else ())
    roles = _ROLES[family]
    return bpe_tokenizer(_SPECIALS[family], bos=roles["bos"], eos=roles["eos"], pad=roles["pad"], unk=roles["unk"])


@lru_cache(maxsize=None)
def _token_ids(family: str) -> dict[str, Any]:
    """Vocabulary size and the special ids the config needs, read from the real processor's tokenizer."""
    processor = tiny_processor(family)
    tok = getattr(processor, "tokenizer", processor)  # text-only families ship a bare tokenizer
    ids = {"vocab_size": len(tok), "pad": tok.pad_token_id, "bos": tok.bos_token_id, "eos": tok.eos_token_id}
    ids.update({s: tok.convert_tokens_to_ids(s) for s in _SPECIALS.get(family, [])})
    ids.update({s: tok.convert_tokens_to_ids(s) for s in ("[CLS]", "[SEP]", "[PAD]") if family in ("vilt", "git")})
    return ids


def tiny_processor(family: str) -> "ProcessorMixin":
    """The family's processor, built offline: tokenizer, 32 px image processor and chat template."""
    _check_family(family)
    from moesaic.testing import processors

    builder = getattr(processors, f"{family}_processor")
    return builder(_tokenizer(family), CHAT_TEMPLATES[family])  # type: ignore[no-any-return]


def _llama_text(ids: dict[str, Any], overrides: dict[str, Any], model_type: str = "llama") -> dict[str, Any]:
    text = {
        "model_type": model_type, "vocab_size": ids["vocab_size"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "max_position_embeddings": 512, "pad_token_id": ids["pad"], "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"], "tie_word_embeddings": False,
    }
    text.update(overrides)
    return text


def _idefics3(ids: dict[str, Any], overrides: dict[str, Any]) -> "PretrainedConfig":
    from transformers import Idefics3Config

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": IMAGE_SIZE, "patch_size": PATCH}
    return Idefics3Config(vision_config=vision, text_config=_llama_text(ids, overrides), scale_factor=2,
                          image_token_id=ids["<image>"], tie_word_embeddings=False)


def _llava(ids: dict[str, Any], overrides: dict[str, Any]) -> "PretrainedConfig":
    from transformers import LlavaConfig

    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": PATCH, "projection_dim": 32}
    return LlavaConfig(vision_config=vision, text_config=_llama_text(ids, overrides), image_token_index=ids["<image>"],
                       image_seq_length=(IMAGE_SIZE // PATCH) ** 2, vision_feature_select_strategy="default",
                       vision_feature_layer=-1, tie_word_embeddings=False)


def _qwen3_vl(ids: dict[str, Any], overrides: dict[str, Any]) -> "PretrainedConfig":
    from transformers import Qwen3VLConfig

    text = {"vocab_size": ids["vocab_size"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                "mrope_interleaved": True}, "pad_token_id": ids["pad"],
            "eos_token_id": ids["eos"], "tie_word_embeddings": False}
    text.update(overrides)
    vision = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": PATCH,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": text["hidden_size"],
              "num_position_embeddings": 16, "deepstack_visual_indexes": [0]}
    return Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                         video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                         vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)


def _blip2(ids: dict[str, Any], overrides: dict[str, Any]) -> "PretrainedConfig":
    from transformers import Blip2Config

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": IMAGE_SIZE, "patch_size": PATCH}
    qformer = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
               "vocab_size": ids["vocab_size"], "encoder_hidden_size": 32, "max_position_embeddings": 64}
    text = {"model_type": "opt", "vocab_size": ids["vocab_size"], "hidden_size": 64, "ffn_dim": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "word_embed_proj_dim": 64,
            "max_position_embeddings": 512, "pad_token_id": ids["pad"], "bos_token_id": ids["bos"],
            "eos_token_id": ids["eos"]}
    text.update(overrides)
    return Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text, num_query_tokens=4,
                       image_token_index=ids["<image>"], image_text_hidden_size=32)


def _vilt(ids: dict[str, Any], overrides: dict[str, Any]) -> "PretrainedConfig":
    from transformers import ViltConfig

    kw: dict[str, Any] = {"vocab_size": ids["vocab_size"], "hidden_size": 32, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "intermediate_size": 64, "image_size": IMAGE_SIZE,
                          "patch_size": PATCH, "max_position_embeddings": 40, "pad_token_id": ids["[PAD]"],
                          "id2label": dict(enumerate(VILT_LABELS)),
                          "label2id": {label: i for i, label in enumerate(VILT_LABELS)}}
    kw.update(overrides)
    return ViltConfig(**kw)


def _git(ids: dict[str, Any], overrides: dict[str, Any]) -> "PretrainedConfig":
    from transformers import GitConfig

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": IMAGE_SIZE, "patch_size": PATCH}
    kw: dict[str, Any] = {"vision_config": vision, "vocab_size": ids["vocab_size"], "hidden_size": 32,
                          "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                          "max_position_embeddings": 128, "pad_token_id": ids["[PAD]"], "bos_token_id": ids["[CLS]"],
                          "eos_token_id": ids["[SEP]"]}
    kw.update(overrides)
    return GitConfig(**kw)


_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
           "image_size": IMAGE_SIZE, "patch_size": PATCH}


def _idefics2(ids: dict[str, Any], overrides: dict[str, Any]) -> "PretrainedConfig":
    from transformers import Idefics2Config

    perceiver = {"hidden_size": 64, "resampler_n_latents": 4, "resampler_depth": 1, "resampler_n_heads": 2,
                 "resampler_head_dim": 16, "num_key_value_heads": 1}
    return Idefics2Config(vision_config=dict(_VISION), perceiver_config=perceiver,
                          text_config=_llama_text(ids, overrides, "mistral"), image_token_id=ids["<image>"],
                          tie_word_embeddings=False)


def _mistral3(ids: dict[str, Any], overrides: dict[str, Any]) -> "PretrainedConfig":
    from transformers import Mistral3Config

    vision = dict(_VISION, model_type="pixtral", head_dim=16)
    return Mistral3Config(vision_config=vision, text_config=_llama_text(ids, overrides, "mistral"),
                          image_token_index=ids["[IMG]"], spatial_merge_size=2, tie_word_embeddings=False)


def _llava_onevision(ids: dict[str, Any], overrides: dict[str, Any]) -> "PretrainedConfig":
    from transformers import LlavaOnevisionConfig

    vision = dict(_VISION, model_type="siglip_vision_model")
    return LlavaOnevisionConfig(vision_config=vision, text_config=_llama_text(ids, overrides, "qwen2"),
                                image_token_index=ids["<image>"], video_token_index=ids["<video>"],
                                tie_word_embeddings=False)


def _internvl(ids: dict[str, Any], overrides: dict[str, Any]) -> "PretrainedConfig":
    from transformers import InternVLConfig

    vision = dict(_VISION, image_size=[IMAGE_SIZE, IMAGE_SIZE], patch_size=[PATCH, PATCH])
    return InternVLConfig(vision_config=vision, text_config=_llama_text(ids, overrides, "qwen2"),
                          image_token_id=ids["<IMG_CONTEXT>"], image_seq_length=4, tie_word_embeddings=False)


def _mllama(ids: dict[str, Any], overrides: dict[str, Any]) -> "PretrainedConfig":
    from transformers import MllamaConfig

    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_global_layers": 1,
              "attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": PATCH, "vision_output_dim": 64,
              "max_num_tiles": 1, "intermediate_layers_indices": [0], "supported_aspect_ratios": [[1, 1]]}
    text = _llama_text(ids, {"num_hidden_layers": 3, "cross_attention_layers": [1], **overrides}, "mllama_text_model")
    for key in ("head_dim", "tie_word_embeddings"):
        text.pop(key)
    return MllamaConfig(vision_config=vision, text_config=text, image_token_index=ids["<|image|>"],
                        tie_word_embeddings=False)


def _qwen3_5(ids: dict[str, Any], overrides: dict[str, Any]) -> "PretrainedConfig":
    from transformers import Qwen3_5Config

    text = _llama_text(ids, {"linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_num_key_heads": 2,
                             "linear_num_value_heads": 4, "layer_types": ["linear_attention", "full_attention"],
                             **overrides}, "qwen3_5_text")
    vision = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": PATCH,
              "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": text["hidden_size"],
              "num_position_embeddings": 16}
    return Qwen3_5Config(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                         video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                         vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)


_BUILDERS = {"idefics3": _idefics3, "llava": _llava, "qwen3_vl": _qwen3_vl, "blip2": _blip2, "vilt": _vilt, "git": _git,
             "idefics2": _idefics2, "mistral3": _mistral3, "llava_onevision": _llava_onevision,
             "internvl": _internvl, "mllama": _mllama, "qwen3_5": _qwen3_5}


def tiny_config(family: str, **text_overrides: Any) -> "PretrainedConfig":
    """A tiny config for ``family``; ``text_overrides`` update the text model's config keys."""
    _check_family(family)
    return _BUILDERS[family](_token_ids(family), text_overrides)


def _model_class(family: str) -> Any:
    import transformers

    names = {"vilt": "ViltForQuestionAnswering", "git": "GitForCausalLM"}
    return getattr(transformers, names[family]) if family in names else transformers.AutoModelForImageTextToText


def tiny_model(family: str, *, seed: int = 0, **text_overrides: Any) -> "PreTrainedModel":
    """Build (not save) the tiny model with ``torch.manual_seed(seed)``, in eval mode."""
    import torch

    config = tiny_config(family, **text_overrides)
    torch.manual_seed(seed)
    cls = _model_class(family)
    model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    if family != "vilt":  # ViLT classifies; it has no generation config
        ids = _token_ids(family)
        bert = family == "git"
        gen = model.generation_config
        gen.pad_token_id = ids["[PAD]"] if bert else ids["pad"]
        gen.eos_token_id = ids["[SEP]"] if bert else ids["eos"]
        gen.bos_token_id = ids["[CLS]"] if bert else ids["bos"]
    return model.eval()


def make_tiny_model(family: str, path: Path, *, seed: int = 0, **text_overrides: Any) -> Path:
    """Build the tiny model of ``family`` (seeded), save it and its processor to ``path``; return ``path``."""
    path = Path(path)
    model = tiny_model(family, seed=seed, **text_overrides)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tiny_processor(family).save_pretrained(path)
    return path


def copy_processor(src: Path, dst: Path) -> None:
    """Copy the processor/tokenizer files of model folder ``src`` into ``dst`` (not the model config)."""
    for f in Path(src).iterdir():
        if f.is_file() and f.suffix in (".json", ".jinja") and f.name not in ("config.json", "generation_config.json"):
            shutil.copy(f, Path(dst) / f.name)


_TEXT_CLASSES = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config", "phi3": "Phi3Config",
                 "glm": "GlmConfig", "cohere": "CohereConfig"}


def tiny_text_model(model_type: str, *, seed: int = 0, **overrides: Any) -> "PreTrainedModel":
    """A tiny text-only causal LM of ``model_type`` (one of :data:`TEXT_FAMILIES`), with the LLaVA tokenizer's vocab."""
    import torch
    import transformers

    if model_type not in _TEXT_CLASSES:
        raise ConfigError(f"unknown tiny text family {model_type!r}", f"choose one of: {', '.join(TEXT_FAMILIES)}")
    ids = _token_ids("llava")
    kw = {k: v for k, v in _llama_text(ids, overrides).items() if k != "model_type"}
    if model_type == "phi3":
        kw.pop("head_dim")  # Phi-3 derives it
    config = getattr(transformers, _TEXT_CLASSES[model_type])(**kw)
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def make_tiny_text_model(model_type: str, path: Path, *, seed: int = 0, **overrides: Any) -> Path:
    """Save :func:`tiny_text_model` and the LLaVA tokenizer (with its chat template) to ``path``."""
    path = Path(path)
    tiny_text_model(model_type, seed=seed, **overrides).save_pretrained(path)
    tok = tiny_processor("llava").tokenizer
    tok.chat_template = CHAT_TEMPLATES["llava"]
    tok.save_pretrained(path)
    return path
