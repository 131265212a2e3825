"""Thin HTTP routes; the logic lives in :class:`moesaic.serve.service.ChatService`."""

from moesaic.serve.routes.openai import router as openai_router
from moesaic.serve.routes.ops import router as ops_router
from moesaic.serve.routes.sagemaker import router as sagemaker_router

__all__ = ["openai_router", "ops_router", "sagemaker_router"]
