"""Offline tokenizers and chat templates for the tiny test models.

Each family gets a byte-level BPE tokenizer (any text round-trips, a few hundred tokens) or, for the
BERT-style families (ViLT, GIT), a WordPiece one over a tiny corpus; the special tokens the family's
processor looks up come first, so their ids are small and fixed. Vocabularies are built by hand, not
trained, so they are the same in every process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

__all__ = ["CORPUS", "bpe_tokenizer", "wordpiece_tokenizer", "CHAT_TEMPLATES"]

CORPUS: tuple[str, ...] = (
    "a photo of a cat sitting on a red mat",
    "what is in the image? a small dog playing in the green grass",
    "describe the picture in one sentence.",
    "the answer is yes. the answer is no. two people, three cars, one blue sky.",
    "a white plate with food on a wooden table next to a cup of coffee",
    "User: Assistant: Question: Answer: USER: ASSISTANT: system user assistant",
    "How many objects are there? What color is the shirt? Where is the bird?",
    "0 1 2 3 4 5 6 7 8 9 , . ! ? : ; ' \" ( ) - _ / \n",
)


def bpe_tokenizer(
    specials: list[str], *, bos: str | None = None, eos: str, pad: str, unk: str | None = None
) -> "PreTrainedTokenizerBase":
    """Byte-level BPE without merges: ``specials`` get ids 0..n-1, then the 256 byte symbols.

    Built by hand rather than trained, so the vocabulary is identical in every process (the trainer breaks
    ties in hash-map order) and any text round-trips.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate([*specials, *alphabet])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk, padding_side="left"
    )
    wrapped.add_special_tokens({"additional_special_tokens": [s for s in specials if s not in (bos, eos, pad, unk)]})
    return wrapped


def wordpiece_tokenizer(extra_words: tuple[str, ...] = ()) -> "PreTrainedTokenizerBase":
    """A lowercase BERT-style WordPiece tokenizer with [CLS] ... [SEP] post-processing.

    Vocabulary: specials, the words of :data:`CORPUS` and ``extra_words``, and every printable ASCII
    character alone and as a ``##`` continuation, so unseen words split into characters, never [UNK].
    """
    import re
    import string

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    words = sorted({w for line in (*CORPUS, *extra_words) for w in re.findall(r"[a-z0-9]+", line.lower())})
    tokens = [*specials, *chars, *(f"##{c}" for c in chars), *(w for w in words if w not in chars)]
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        padding_side="right",
    )


# Jinja chat templates. Content is a string or a list of {"type": "text"|"image", ...} parts.
_PARTS = (
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{IMAGE}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
)


def _template(prefix: str, image: str, role_open: str, role_close: str, gen: str) -> str:
    parts = _PARTS.replace("{IMAGE}", image)
    return (
        prefix + "{% for message in messages %}" + role_open + parts + role_close + "{% endfor %}"
        "{% if add_generation_prompt %}" + gen + "{% endif %}"
    )


CHAT_TEMPLATES: dict[str, str] = {
    # SmolVLM-like: "<|im_start|>User:<image>hi<end_of_utterance>\nAssistant:"
    "idefics3": _template(
        "<|im_start|>",
        "<image>",
        "{{ message['role'] | capitalize }}:",
        "<end_of_utterance>\n",
        "Assistant:",
    ),
    # LLaVA-1.5-like: "USER: <image>\nhi ASSISTANT:"
    "llava": _template(
        "",
        "<image>\n",
        "{{ message['role'] | upper }}: ",
        " ",
        "ASSISTANT:",
    ),
    # Qwen-like: "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>hi<|im_end|>\n"
    "qwen3_vl": _template(
        "",
        "<|vision_start|><|image_pad|><|vision_end|>",
        "<|im_start|>{{ message['role'] }}\n",
        "<|im_end|>\n",
        "<|im_start|>assistant\n",
    ),
    # Idefics2 (Mistral text): "User:<image>hi<end_of_utterance>\nAssistant:"
    "idefics2": _template("", "<image>", "{{ message['role'] | capitalize }}:", "<end_of_utterance>\n", "Assistant:"),
    # Mistral3 (Pixtral vision): "[INST][IMG]hi[/INST]"
    "mistral3": _template("<s>", "[IMG]", "{{ '[INST]' if message['role'] == 'user' else '' }}",
                          "{{ '[/INST]' if message['role'] == 'user' else '</s>' }}", ""),
    # Qwen2 text hosts and Mllama: text-only tiny tokenizers (no image placeholder is ever rendered)
    "llava_onevision": _template("", "<image>", "<|im_start|>{{ message['role'] }}\n", "<|im_end|>\n",
                                 "<|im_start|>assistant\n"),
    "internvl": _template("", "<IMG_CONTEXT>", "<|im_start|>{{ message['role'] }}\n", "<|im_end|>\n",
                          "<|im_start|>assistant\n"),
    "qwen3_5": _template("", "<|vision_start|><|image_pad|><|vision_end|>", "<|im_start|>{{ message['role'] }}\n",
                         "<|im_end|>\n", "<|im_start|>assistant\n"),
    "mllama": _template("<|begin_of_text|>", "<|image|>", "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n",
                        "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    # BLIP-2 puts its query tokens in front by itself: "Question: hi Answer:"
    "blip2": _template("", "", "{{ 'Question: ' if message['role'] == 'user' else '' }}", " ", "Answer:"),
    # GIT: the question is a plain text prefix.
    "git": _template("", "", "", " ", ""),
    # ViLT: the question only.
    "vilt": _template("", "", "", " ", ""),
}
