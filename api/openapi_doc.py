"""One way to amend the app's OpenAPI document: several modules add what FastAPI cannot know
(error shapes, middleware responses, rules, bulk bodies). Each wraps the generator once; the edits
run the first time the document is built, in the order the modules were installed (innermost
first), and the result is cached on the app."""

from collections.abc import Callable

from fastapi import FastAPI


def amend(app: FastAPI, change: Callable[[dict], None]) -> None:
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        document = generate()
        change(document)
        app.openapi_schema = document
        return document

    app.openapi = openapi
