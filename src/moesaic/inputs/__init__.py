"""How inputs enter moesaic: images from any reference, and chat messages."""

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

__all__ = [
    "ChatMessage",
    "ImageURL",
    "ImageURLPart",
    "QuestionRequest",
    "TextPart",
    "Turn",
    "image_refs",
    "question_messages",
    "resolve_messages",
]
