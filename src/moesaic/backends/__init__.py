"""How a model answers: the backend protocol, the registry and the built-in backends."""

from moesaic.backends.base import Answer, Backend, BackendOptions, GenerationParams, StreamChunk
from moesaic.backends.registry import list_backends, load_backend, register_backend

__all__ = [
    "Answer",
    "Backend",
    "BackendOptions",
    "GenerationParams",
    "StreamChunk",
    "list_backends",
    "load_backend",
    "register_backend",
]
