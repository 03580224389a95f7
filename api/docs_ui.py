"""/docs (Swagger UI) and /redoc (ReDoc) from static files shipped in a pinned PyPI package
(`fastapi-offline`), so both pages work on a machine without internet: FastAPI's defaults load
their scripts from a CDN and ReDoc's fonts from Google."""

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request

ASSETS = Path(fastapi_offline.__file__).parent / "static"
STATIC_URL = "/docs-assets"


def install(app: FastAPI) -> None:
    """Serve the two pages as plain routes (outside the OpenAPI document and the app-wide
    dependencies, like FastAPI's own docs routes) and their assets from the package."""
    app.mount(STATIC_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    async def swagger(request: Request):
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            # no badge that asks swagger.io to validate the document
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def redoc(request: Request):
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        )

    app.add_route("/docs", swagger, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
