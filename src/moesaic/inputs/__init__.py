"""How inputs enter moesaic: images from any reference, and chat messages."""

from moesaic.inputs.encode import encode_image_base64
from moesaic.inputs.images import decode_base64, load_image, load_image_bytes, parse_data_url
from moesaic.inputs.messages import (
    ChatMessage,
    ImageURL,
    ImageURLPart,
    QuestionRequest,
    TextPart,
    Turn,
    image_refs,
    question_messages,
    resolve_messages,
)
from moesaic.inputs.policy import ImagePolicy

__all__ = [
    "ChatMessage",
    "ImagePolicy",
    "ImageURL",
    "ImageURLPart",
    "QuestionRequest",
    "TextPart",
    "Turn",
    "decode_base64",
    "encode_image_base64",
    "image_refs",
    "load_image",
    "load_image_bytes",
    "parse_data_url",
    "question_messages",
    "resolve_messages",
]
