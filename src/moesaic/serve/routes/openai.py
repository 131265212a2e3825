"""OpenAI-compatible routes: chat completions (plain and streamed) and the model list."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from moesaic.serve.protocol import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList, body_ref
from moesaic.serve.routes.common import client_of, parse_body, service_of, until_disconnect

__all__ = ["router"]

router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletion, openapi_extra=body_ref("ChatCompletionRequest"))
async def chat_completions(request: Request) -> Response:
    service = service_of(request)
    req = await parse_body(request, ChatCompletionRequest)
    client = client_of(request)
    if not req.stream:
        result = await until_disconnect(request, service.complete(req, client))
        return JSONResponse(result.model_dump(mode="json"))
    events = await until_disconnect(request, service.open_stream(req, client))
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[ModelCard(id=service_of(request).model_name)])
