"""Operations: Prometheus metrics and the playground page."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from moesaic.serve.routes.common import service_of

__all__ = ["router"]

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body, content_type = service_of(request).metrics.render()
    return Response(body, media_type=content_type)


@router.get("/", response_class=HTMLResponse)
async def playground() -> HTMLResponse:
    page = resources.files("moesaic.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(page)
