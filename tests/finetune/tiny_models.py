"""Tiny random VLMs built offline for the fine-tuning tests.

Stand-in until ``moesaic.testing`` (the shared factories) lands: same contract
(``make_tiny_model(family, path, seed=0) -> path``), used only by tests/finetune.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["make_tiny_model", "tiny_processor", "FAMILIES"]

FAMILIES = ("idefics3", "qwen3_vl")

_CORPUS = [
    "User: What colour is the shape? Answer with one word. Assistant: red green blue yellow",
    "What is the colour of the square circle shape? red, green, blue, yellow, purple, orange",
    '{"color": "red", "shape": "circle", "size": "small"} {"color": "blue", "shape": "square", "size": "large"}',
    "system user assistant Describe the image. A photo of a thing. yes no 0 1 2 3 4 5 6 7 8 9",
]

_IDEFICS3_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
_QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tokenizer(specials: list[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=specials[0], eos_token=specials[1])
    fast.add_special_tokens({"additional_special_tokens": specials[2:]})
    return fast


def tiny_processor(family: str):  # noqa: ANN201
    """Idefics3: a processor; qwen3_vl: (tokenizer, image processor) — its processor needs torchvision."""
    if family == "idefics3":
        from transformers import Idefics3ImageProcessor, Idefics3Processor

        rows = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
        tok = _tokenizer(["<pad>", "<end_of_utterance>", "<|im_start|>", "<image>", "<fake_token_around_image>",
                          "<global-img>", *rows])
        ip = Idefics3ImageProcessor(size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                                    do_image_splitting=True)
        return Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=_IDEFICS3_TEMPLATE)
    if family == "qwen3_vl":
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        tok = _tokenizer(["<|endoftext|>", "<|im_end|>", "<|im_start|>", "<|image_pad|>", "<|video_pad|>",
                          "<|vision_start|>", "<|vision_end|>"])
        ip = Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                                   size={"shortest_edge": 16 * 16, "longest_edge": 16 * 16 * 64})
        tok.chat_template = _QWEN_TEMPLATE
        return tok, ip
    raise ValueError(family)


def _config(family: str, tok) -> object:  # noqa: ANN001
    ids = {t: tok.convert_tokens_to_ids(t) for t in tok.get_vocab()}
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False)
    if family == "idefics3":
        from transformers import Idefics3Config

        return Idefics3Config(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=8),
            text_config=dict(model_type="llama", **text), scale_factor=2,
            image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id,
            tie_word_embeddings=False)
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64,
                           num_position_embeddings=64, deepstack_visual_indexes=[0]),
        text_config=dict(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                        "mrope_section": [2, 3, 3]}, **text),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False)


def make_tiny_model(family: str, path: Path, *, seed: int = 0) -> Path:
    from transformers import AutoModelForImageTextToText

    processor = tiny_processor(family)
    tok = processor.tokenizer if family == "idefics3" else processor[0]
    config = _config(family, tok)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    if family == "idefics3":
        processor.save_pretrained(path)
    else:  # no torchvision here: save the parts; moesaic's loader builds an image-only processor
        for part in processor:
            part.save_pretrained(path)
    return Path(path)
