"""A tiny random text-only Llama (``LlamaForCausalLM``) with a SmolLM2-style chat template, built offline.

The template is SmolLM2-Instruct's shape (ChatML turns with plain-string content and a default system
prompt when none is given), so code that runs on the tiny model runs on the real SmolLM2 base unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from moesaic.testing.tokenizers import bpe_tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

__all__ = ["CHATML_TEMPLATE", "tiny_causal_tokenizer", "make_tiny_causal_lm"]

CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_causal_tokenizer() -> "PreTrainedTokenizerBase":
    tok = bpe_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos="<|im_start|>", eos="<|im_end|>",
                        pad="<|endoftext|>")
    tok.chat_template = CHATML_TEMPLATE
    tok.padding_side = "left"
    return tok


def make_tiny_causal_lm(path: Path, *, seed: int = 0, **overrides: Any) -> Path:
    """Save a seeded tiny ``LlamaForCausalLM`` (hidden 64, 2 layers unless overridden) and its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_causal_tokenizer()
    cfg: dict[str, Any] = {
        "vocab_size": len(tok), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 512,
        "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
        "tie_word_embeddings": False,
    }
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg)).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
