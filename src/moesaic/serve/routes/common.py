"""Helpers shared by the routes."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from moesaic.errors import InputError
from moesaic.serve.service import ChatService, validation_error

__all__ = ["service_of", "parse_body"]

M = TypeVar("M", bound=BaseModel)


def service_of(request: Request) -> ChatService:
    return request.app.state.service  # type: ignore[no-any-return]


async def parse_body(request: Request, model: type[M]) -> M:
    """Validate the JSON body against ``model``; errors are 400s naming the field."""
    raw = await request.body()
    try:
        data: Any = json.loads(raw or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"the body is not valid JSON: {exc}", "send a JSON object") from None
    if not isinstance(data, dict):
        raise InputError("the body must be a JSON object", "send a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
