"""SageMaker's container contract (``/ping``, ``/invocations``) and a JSON health check."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from moesaic.serve.protocol import InvocationResponse, body_ref
from moesaic.serve.routes.common import client_of, service_of, until_disconnect

__all__ = ["router"]

router = APIRouter()


@router.get("/ping")
async def ping(request: Request) -> Response:
    """200 once the model is loaded and the worker runs (and, behind the gateway, the engine is up), else 503."""
    status, _ = await service_of(request).health()
    return Response(status_code=status)


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    status, body = await service_of(request).health()
    return JSONResponse(body, status_code=status)


@router.post("/invocations", response_model=InvocationResponse,
             openapi_extra=body_ref("InvocationQuestion", "ChatCompletionRequest"))
async def invocations(request: Request) -> JSONResponse:
    """``{"question", "image"}`` (or ``images``), a chat-completions body, or raw ``image/*`` bytes
    (the question then comes from ``?question=``)."""
    service = service_of(request)
    content_type = request.headers.get("content-type", "application/json").lower()
    body = await request.body()
    question = request.query_params.get("question")
    result = await until_disconnect(request, service.invoke(body, content_type, question, client_of(request)))
    return JSONResponse(result.model_dump(mode="json"))
