"""An app whose ``/docs`` serves Swagger UI from local files, for ``test_swagger_ui.py``.

FastAPI's default ``/docs`` loads Swagger UI from a CDN. The test serves the files of the
``swagger-ui-dist`` npm package instead, from the folder named by ``SWAGGER_UI_DIST``.
"""

from __future__ import annotations

import os

import anyio
from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from fastapi_hangup import add_cancellation, cancellable, cancellable_route

DIST_ENV = "SWAGGER_UI_DIST"

router = APIRouter(route_class=cancellable_route(tag="cancellable"))


@router.get("/reports/{name}", summary="Build a report")
async def build_report(name: str) -> dict[str, str]:
    await anyio.sleep(1)
    return {"report": name}


@router.post("/orders", summary="Place an order")  # POST: not cancellable on this router
async def place_order(item: str) -> dict[str, str]:
    return {"order": item}


def with_local_docs(app: FastAPI) -> FastAPI:
    """Serve Swagger UI at ``/docs`` from the local dist files, every operation expanded."""
    app.mount("/swagger-ui", StaticFiles(directory=os.environ[DIST_ENV]), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="swagger-ui check",
            swagger_js_url="/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/swagger-ui/favicon-32x32.png",
            # Expand every operation, so its responses are in the DOM, and show x- extensions.
            swagger_ui_parameters={"docExpansion": "full", "showExtensions": True},
        )

    return app


app = with_local_docs(FastAPI(title="swagger-ui check", docs_url=None, redoc_url=None))
app.include_router(router)

# The app-wide call: a plain route of the app gets the full mark and the call's tag.
wide_app = with_local_docs(FastAPI(title="app-wide", docs_url=None, redoc_url=None))
add_cancellation(wide_app, tag="stops on hang-up")


@wide_app.get("/search", summary="Search")
async def search(q: str) -> dict[str, str]:
    return {"q": q}


@wide_app.post("/orders", summary="Place an order")  # POST: not cancelled by default
async def wide_order(item: str) -> dict[str, str]:
    return {"order": item}


# The decorator alone, on a plain app: no other call, the description says it.
plain_app = with_local_docs(FastAPI(title="decorator only", docs_url=None, redoc_url=None))


@plain_app.get("/summaries/{name}", summary="Summarize")
@cancellable
async def summarize(name: str) -> dict[str, str]:
    """Summarize a document."""
    return {"summary": name}
