"""A1111's REST API (``/sdapi/v1``), served by the same process, engine and GPU queue as the UI.

Clients written for sd-webui (editor plugins, chat front ends, A1111 client libraries) work unchanged: the
payloads, defaults and responses keep A1111's names and shapes, while validation is the UI's own
(``GenerationRequest``), so both reject the same input with the same sentence.

The ControlNet extension's ``/controlnet`` routes (model and module lists, detect) sit beside them.
``app_kwargs(services, users)`` returns FastAPI arguments for Gradio's ``launch(app_kwargs=...)``; the routes are
added in the server's lifespan, before it accepts its first connection, so the UI is never up without the API.
Nothing in this package imports Gradio.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

PREFIX = "/sdapi/v1"


def app_kwargs(services, users: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """``app_kwargs`` for ``Blocks.launch``: the API routes (HTTP Basic when ``users``) and the docs pages."""
    from .auth import ApiAuth
    from .controlnet import create_controlnet_router
    from .routes import ApiRoute, create_router

    router = create_router(services, users)
    controlnet = create_controlnet_router(services, ApiAuth(users), ApiRoute)

    @asynccontextmanager
    async def lifespan(app):
        app.include_router(router)
        app.include_router(controlnet)
        app.openapi_schema = None  # rebuilt on the next /openapi.json, now with the API in it
        yield

    return {"lifespan": lifespan, "docs_url": "/docs", "redoc_url": "/redoc"}
