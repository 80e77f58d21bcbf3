"""The OpenAPI document of the JSON API and Swagger UI to read and try it, served from package assets."""
from importlib.resources import files

from flask import Blueprint, current_app, jsonify, render_template

from ..openapi import document

# flask-swagger-ui ships Swagger UI's dist files (and their licence). We serve those, never a CDN, with our
# own page and init script (the package's own page has an inline script, which the CSP forbids).
SWAGGER_UI_DIST = str(files("flask_swagger_ui") / "dist")
# Swagger UI renders everything from its bundle and styles elements through the DOM (which CSP allows), so the
# pages' strict policy holds; connect-src 'self' lets "Try it out" and "Authorize" call this service.
DOCS_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'; "
            "form-action 'self'")

bp = Blueprint("docs", __name__, static_folder=SWAGGER_UI_DIST, static_url_path="/docs/swagger-ui")


@bp.get("/api/v1/openapi.json")
@document(responses={200: "OpenAPIDocument"})
def openapi_json():
    """This OpenAPI 3.1 document: every JSON endpoint, its request and response schemas and error codes."""
    document_ = current_app.extensions.get("authsvc.openapi")
    if document_ is None:  # built once per app, from its routes (all registered by the first request)
        from ..openapi import spec  # apispec and the schema generation: loaded by the first worker asked

        document_ = current_app.extensions["authsvc.openapi"] = spec.build(current_app)
    return jsonify(document_)


@bp.get("/docs")
def swagger_ui():
    """Swagger UI for the OpenAPI document."""
    response = current_app.make_response(render_template("docs.html"))
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response
