"""Operations: Prometheus metrics and the playground page."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
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
    page, headers = _page()
    return HTMLResponse(page, headers=headers)


@functools.lru_cache(maxsize=1)
def _page() -> tuple[str, dict[str, str]]:
    """The playground and its security headers: no framing (clickjacking), and a CSP that allows exactly
    the page's own inline script and style (by hash), requests to this server, and chosen images."""
    page = resources.files("moesaic.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)

    csp = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; connect-src 'self'; "
           "img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return page, {"Content-Security-Policy": csp, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                  "Referrer-Policy": "no-referrer"}
