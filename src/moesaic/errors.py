"""Errors meant for users: each says what was wrong and how to fix it.

The CLI renders them as one line and a non-zero exit; the server renders them as an OpenAI-shaped
``{"error": {"message", "type", "param", "code"}}`` body with :attr:`MoesaicError.status`.
"""

from __future__ import annotations

__all__ = [
    "MoesaicError",
    "InputError",
    "ImageError",
    "URLPolicyError",
    "FetchError",
    "ConfigError",
    "ModelLoadError",
    "UnsupportedArchitectureError",
    "MissingDependencyError",
    "AuthError",
    "NotFoundError",
    "OverloadedError",
    "RequestTimeoutError",
    "missing_extra",
]


class MoesaicError(Exception):
    """Base class. ``message`` says what was wrong, ``hint`` how to fix it."""

    status: int = 400
    type: str = "invalid_request_error"
    code: str = "invalid_request"

    def __init__(self, message: str, hint: str | None = None, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.param = param

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict[str, object]:
        """OpenAI-shaped error body."""
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}


class InputError(MoesaicError):
    """A request or argument is malformed."""


class ImageError(InputError):
    code = "invalid_image"


class URLPolicyError(InputError):
    code = "url_not_allowed"


class FetchError(InputError):
    code = "image_fetch_failed"


class ConfigError(MoesaicError):
    code = "invalid_config"


class ModelLoadError(MoesaicError):
    status = 500
    type = "server_error"
    code = "model_load_failed"


class UnsupportedArchitectureError(ConfigError):
    code = "unsupported_architecture"


class MissingDependencyError(MoesaicError):
    status = 501
    type = "server_error"
    code = "missing_dependency"


class AuthError(MoesaicError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFoundError(MoesaicError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class OverloadedError(MoesaicError):
    status = 503
    type = "server_error"
    code = "overloaded"


class RequestTimeoutError(MoesaicError):
    status = 504
    type = "server_error"
    code = "timeout"


def missing_extra(package: str, extra: str) -> MissingDependencyError:
    """The error raised when an optional dependency is absent."""
    return MissingDependencyError(
        f"{package} is not installed", f"install it with: pip install 'moesaic[{extra}]'"
    )
