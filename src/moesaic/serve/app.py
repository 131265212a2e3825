"""``create_app`` (the FastAPI app) and ``serve`` (the ``moesaic serve`` command).

Started as plain ``moesaic serve`` it honours SageMaker's container contract: port 8080, ``GET /ping``,
``POST /invocations`` (and binds every interface when SageMaker's environment variables are present).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from moesaic.backends.base import Backend, BackendOptions
from moesaic.errors import MoesaicError, NotFoundError, OverloadedError, missing_extra
from moesaic.serve.protocol import InternalError, error_payload, shown
from moesaic.serve.settings import ServeConfig, sagemaker_host

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    from moesaic.serve.metrics import ServeMetrics

__all__ = ["create_app", "serve"]

log = logging.getLogger(__name__)


def create_app(settings: ServeConfig | None = None, backend: Backend | None = None) -> "FastAPI":
    """Build the app. ``backend`` defaults to ``load_backend(settings.model)``."""
    try:
        from fastapi import FastAPI
    except ImportError:  # pragma: no cover
        raise missing_extra("fastapi", "serve") from None
    from moesaic.serve.metrics import ServeMetrics
    from moesaic.serve.middleware import GuardMiddleware
    from moesaic.serve.routes import openai_router, ops_router, sagemaker_router
    from moesaic.serve.upstream import service_for, upstream_backend

    settings = settings or ServeConfig()
    if backend is None and settings.upstream:
        backend = upstream_backend(settings)
    if backend is None:
        from moesaic.backends.registry import load_backend

        options = BackendOptions(dtype=settings.dtype, device=settings.device, max_batch_size=settings.max_batch_size,
                                 routing=settings.routing, quantization=settings.quantization)
        backend = load_backend(settings.model, options, backend=settings.backend)
    metrics = ServeMetrics()
    service = service_for(backend, settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        log.info("serving %s", service.model_name)
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="moesaic", summary="OpenAI- and SageMaker-compatible VLM server", lifespan=lifespan)
    app.state.service = service
    app.include_router(openai_router)
    app.include_router(sagemaker_router)
    app.include_router(ops_router)
    _install_error_handlers(app, metrics)
    _document_request_bodies(app)
    app.add_middleware(GuardMiddleware, api_key=settings.resolved_api_key(),
                       max_body_bytes=settings.max_body_bytes, metrics=metrics, body_timeout_s=settings.body_timeout_s)
    return app


def _document_request_bodies(app: "FastAPI") -> None:
    """Routes parse their bodies themselves (for OpenAI-shaped 400s); publish the body schemas anyway."""
    from fastapi import FastAPI

    from moesaic.serve.protocol import request_schemas

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(request_schemas())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _install_error_handlers(app: "FastAPI", metrics: "ServeMetrics") -> None:
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    from moesaic.errors import InputError
    from moesaic.serve.routes.common import ClientGone

    def render(exc: MoesaicError) -> JSONResponse:
        metrics.observe_error(exc.code)
        headers = {"Retry-After": "1"} if isinstance(exc, OverloadedError) else None
        return JSONResponse(error_payload(exc), status_code=exc.status, headers=headers)

    async def on_moesaic(_: "Request", exc: Exception) -> JSONResponse:
        return render(exc)  # type: ignore[arg-type]

    async def on_validation(_: "Request", exc: Exception) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}  # type: ignore[attr-defined]
        loc = ".".join(str(p) for p in first["loc"] if p != "body") or "(body)"
        return render(InputError(f"invalid request: {loc}: {first['msg']}", f"fix the '{loc}' field", param=loc))

    async def on_http(request: "Request", exc: Exception) -> JSONResponse:
        code = getattr(exc, "status_code", 500)
        if code == 404:
            err: MoesaicError = NotFoundError(f"no route {shown(request.url.path)}",
                                              "see /docs for the routes (e.g. POST /v1/chat/completions)")
        elif code == 405:
            err = InputError(f"{shown(request.method)} is not allowed on {shown(request.url.path)}",
                             "check the HTTP method")
            err.status, err.code = 405, "method_not_allowed"
        else:
            err = InputError(shown(str(getattr(exc, "detail", "bad request"))), "check the request")
            err.status = code
        return render(err)

    async def on_crash(_: "Request", exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return render(InternalError("internal server error", "retry; if it keeps failing, read the server log"))

    async def on_gone(_: "Request", exc: Exception) -> Response:
        return Response(status_code=499)  # nobody is listening; nginx's "client closed request"

    app.add_exception_handler(ClientGone, on_gone)
    app.add_exception_handler(MoesaicError, on_moesaic)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (``M_ARENA_MAX``); ``True`` when applied.

    glibc gives threads that allocate at once their own arenas (up to 8 per core) and keeps freed memory in
    each. Under 16 concurrent clients the server's threads (image decoding, model, experts) grew RSS by
    20-26 % over the first minute and it stayed there; with two arenas it stayed flat and throughput did not
    drop (BENCHMARKS.md, "Load"). ``MALLOC_ARENA_MAX`` in the environment wins; a no-op off glibc.
    """
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-8, arenas))  # -8: M_ARENA_MAX in <malloc.h>
    except (OSError, AttributeError):  # musl or another libc
        return False


def serve(config: ServeConfig) -> None:
    """Serve a model over an OpenAI- and SageMaker-compatible HTTP API (blocks until stopped).

    With ``--engine vllm`` a vLLM child on a private loopback port answers behind this server; when the child
    dies the server stops and this raises; SIGTERM drains this server's requests, then stops the child.
    """
    limit_malloc_arenas()
    if config.engine == "vllm":
        from moesaic.serve.vllm import VllmChild

        with VllmChild.running(config) as child:
            gateway = config.model_copy(update={"upstream": child.url, "upstream_api_key": child.key})
            _run(create_app(gateway), config, watch=lambda: child.exit_code)
        return
    _run(create_app(config), config)


def _run(app: "FastAPI", config: ServeConfig, watch: "Callable[[], int | None] | None" = None) -> None:
    """Run ``app`` under uvicorn until stopped; ``watch`` returns an exit code once the engine behind it died
    (the server then stops and this raises)."""
    try:
        import uvicorn
    except ImportError:  # pragma: no cover
        raise missing_extra("uvicorn", "serve") from None
    from moesaic.serve.timeouts import uvicorn_options

    server = uvicorn.Server(uvicorn.Config(app, host=sagemaker_host(config), port=config.port,
                                           log_level=config.log_level, **uvicorn_options(config.header_timeout_s)))
    died: list[int] = []
    if watch is not None:
        def watchdog() -> None:
            while not server.should_exit:
                if (code := watch()) is not None:
                    log.error("the model engine exited with status %d; stopping", code)
                    died.append(code)
                    server.should_exit = True
                    return
                time.sleep(0.5)

        threading.Thread(target=watchdog, name="moesaic-engine-watch", daemon=True).start()
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal; absorbing that re-raise makes
    # a graceful stop exit 0 (what SageMaker, Kubernetes and systemd read as a clean shutdown).
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: log.info("stopped by SIGTERM")) if in_main else None
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C: uvicorn drained and re-raised SIGINT; a clean stop, as uvicorn.run has it
        pass
    finally:
        server.should_exit = True
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if died:
        raise MoesaicError(f"the model engine exited with status {died[0]}, so the server stopped",
                           "read the engine's output above for the cause")
    if not server.started:
        raise MoesaicError(f"the server could not start on {sagemaker_host(config)}:{config.port}",
                           "read the log above (is the port in use? choose another with --port)")
