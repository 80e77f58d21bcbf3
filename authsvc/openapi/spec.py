"""Build the OpenAPI 3.1 document from the app's routes, their `@document` records and the pydantic models.

apispec holds the document's structure (paths, components, security schemes); pydantic writes every schema
(JSON Schema 2020-12, which OpenAPI 3.1 uses as is), so the documented request bodies are exactly what
`parse()` accepts.
"""
from __future__ import annotations

import inspect
import re
import sys
import typing
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from apispec import APISpec
from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from . import CLIENT, CLIENT_OPTIONAL, GATEWAY, PUBLIC, USER, Operation, responses

REF = "#/components/schemas/{model}"
PATH_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
USER_SECURITY = [{"bearerAuth": []}, {"oauth2Password": []}]
ERROR_CODES = {  # the codes an operation may answer with, by what it does; `document(errors=...)` adds more
    "body": {400: ("bad_request",), 413: ("payload_too_large",), 415: ("unsupported_media_type",),
             422: ("validation_error",)},
    "form": {400: ("invalid_request",), 413: ("payload_too_large",)},
    "path": {404: ("not_found",)},
    USER: {401: ("unauthorized", "token_expired", "token_revoked"), 403: ("forbidden",)},
    GATEWAY: {401: ("unauthorized",), 403: ("forbidden",)},
    CLIENT: {401: ("invalid_client",)},
    CLIENT_OPTIONAL: {401: ("invalid_client",)},
    "limited": {429: ("rate_limited",)},
    "always": {503: ("unavailable",)},
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.",
                               "schema": {"type": "integer"}}}
DESCRIPTION = """Authentication and user management: accounts, sessions, tokens, admin.

Errors (except the OAuth2 endpoints) are `{"error": {"code", "message", "fields"?}}`; the OAuth2 endpoints
(`/auth/token`, `/auth/revoke`, `/auth/introspect`) answer RFC 6749 errors `{"error", "error_description"}`.

**Authorize** with `oauth2Password` (your email as username) to try the endpoints that need a user, or
paste an access token into `bearerAuth`. Service clients use HTTP Basic (`clientBasic`) at the token and
introspection endpoints. Signed-in browsers may call the API with the pages' cookies instead of a Bearer
token; unsafe methods then need `X-CSRF-Token` equal to the cookie `csrf_access_token`."""


class _Schemas(GenerateJsonSchema):
    """Pydantic's JSON Schema without per-field titles (the property names say it) and without null defaults
    on fields that cannot be null."""

    def field_title_should_be_set(self, schema) -> bool:
        return False

    def default_schema(self, schema):
        result = super().default_schema(schema)
        if result.get("default", ...) is None and not _allows_null(result):
            del result["default"]
        return result


def _allows_null(schema: dict) -> bool:
    return schema.get("type") == "null" or any(_allows_null(s) for s in schema.get("anyOf", ()))


def _without_null(schema: dict) -> dict:
    """A parameter's schema without the `null` branch and null default (a query string has no null)."""
    schema = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
    branches = [branch for branch in schema.pop("anyOf", ()) if branch.get("type") != "null"]
    if len(branches) == 1:
        return {**branches[0], **schema}
    return {**schema, "anyOf": branches} if branches else schema


def _model(reference: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model, is_list) of a documented response: a class, its name in responses.py, or `list[...]` of one."""
    many = typing.get_origin(reference) is list
    if many:
        (reference,) = typing.get_args(reference)
    if isinstance(reference, typing.ForwardRef):
        reference = reference.__forward_arg__
    return (getattr(responses, reference) if isinstance(reference, str) else reference), many


def _models_of(operation: Operation) -> list[tuple[type[BaseModel], str]]:
    found = [(m, "validation") for m in (operation.body, operation.form) if m is not None]
    for reference in operation.responses.values():
        model, _ = _model(reference)
        if model is not None:
            found.append((model, "serialization"))
    return found


def _error_statuses(operation: Operation, has_path_arguments: bool) -> dict[int, list[str]]:
    present = {"body": operation.body, "form": operation.form, "path": has_path_arguments,
               "limited": operation.rate_limited, "always": True}
    kinds = [kind for kind, there in present.items() if there]
    if operation.auth is not PUBLIC:  # a permission ("users:read") is a user's token whose roles grant it
        kinds.append(operation.auth if operation.auth in (USER, GATEWAY, CLIENT, CLIENT_OPTIONAL) else USER)
    statuses: dict[int, list[str]] = {}
    extra = [operation.errors] + [ERROR_CODES[kind] for kind in kinds]
    for table in reversed(extra):  # implied codes first, then the view's own
        for status, codes in table.items():
            listed = statuses.setdefault(status, [])
            listed.extend(code for code in codes if code not in listed)
    return statuses


def _content(reference: Any, refs: dict) -> dict | None:
    model, many = _model(reference)
    if model is None:
        return None
    schema = refs[(model, "serialization")]
    return {"application/json": {"schema": {"type": "array", "items": schema} if many else schema}}


def _parameters(operation: Operation, arguments: list[str]) -> list[dict]:
    uuid = {"type": "string", "format": "uuid"}
    parameters = [{"name": name, "in": "path", "required": True, "schema": uuid} for name in arguments]
    if operation.query is not None:
        schema = operation.query.model_json_schema(schema_generator=_Schemas)
        required = set(schema.get("required", ()))
        for name, prop in schema["properties"].items():
            prop = _without_null(prop)
            parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                parameter["description"] = prop.pop("description")
            parameters.append(parameter)
    return parameters


def _security(auth: str | None) -> list[dict] | None:
    if auth is PUBLIC:
        return None
    if auth == CLIENT:
        return [{"clientBasic": []}]
    if auth == CLIENT_OPTIONAL:
        return [{}, {"clientBasic": []}]
    return USER_SECURITY


def _operation_object(view, operation: Operation, endpoint: str, arguments: list[str], refs: dict) -> dict:
    doc = inspect.getdoc(view) or endpoint
    summary, _, rest = doc.partition("\n")
    result: dict[str, Any] = {"operationId": endpoint.rsplit(".", 1)[-1], "summary": summary.strip(),
                              "tags": [_tag(view)]}
    description = operation.description or rest.strip()
    if operation.auth not in (PUBLIC, USER, GATEWAY, CLIENT, CLIENT_OPTIONAL):
        needs = f"Needs the `{operation.auth}` permission."
        description = f"{description}\n\n{needs}" if description else needs
    if description:
        result["description"] = description
    parameters = _parameters(operation, arguments)
    if parameters:
        result["parameters"] = parameters
    if operation.body is not None:
        result["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": refs[(operation.body, "validation")]}}}
    if operation.form is not None:
        result["requestBody"] = {"required": True, "content": {
            "application/x-www-form-urlencoded": {"schema": refs[(operation.form, "validation")]}}}
    security = _security(operation.auth)
    if security is not None:
        result["security"] = security
    answers: dict[int, dict] = {}
    for status, model in operation.responses.items():
        answers[status] = {"description": HTTPStatus(status).phrase}
        content = _content(model, refs)
        if content:
            answers[status]["content"] = content
    oauth = operation.form is not None
    for status, codes in sorted(_error_statuses(operation, bool(arguments)).items()):
        if status in operation.responses:  # the view's own answer for this status (readyz's 503) wins
            continue
        error = responses.OAuthError if oauth else responses.Error
        answers[status] = {
            "description": f"{HTTPStatus(status).phrase}: " + ", ".join(f"`{c}`" for c in codes),
            "content": {"application/json": {"schema": refs[(error, "serialization")]}},
        }
        if status in (429, 503):
            answers[status]["headers"] = dict(RETRY_AFTER)
    for status, headers in operation.headers.items():
        answers[status]["headers"] = {name: {"description": text, "schema": {"type": "string"}}
                                      for name, text in headers.items()}
    result["responses"] = dict(sorted(answers.items()))
    return result


def _tag(view) -> str:
    return view.__module__.rsplit(".", 1)[-1]


def _version() -> str:
    try:
        return version("authsvc")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0"


def _documented(app: Flask):
    """(rule, view, operation) for every route whose view carries a `@document` record, in path order."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        view = app.view_functions.get(rule.endpoint)
        operation = getattr(view, "apidoc", None)
        if operation is not None:
            yield rule, view, operation


def build(app: Flask) -> dict:
    """The OpenAPI 3.1 document of every documented route of `app`."""
    routes = list(_documented(app))
    token_path = next((r.rule for r in app.url_map.iter_rules() if r.endpoint == "api.token"),
                      "/api/v1/auth/token")
    spec = APISpec(title="authsvc", version=_version(), openapi_version="3.1.0",
                   info={"description": DESCRIPTION, "license": {"name": "MIT", "identifier": "MIT"}})
    spec.components.security_scheme("bearerAuth", {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "A user's access token (from login, refresh or the token endpoint)."})
    spec.components.security_scheme("oauth2Password", {
        "type": "oauth2", "description": "Sign in with email and password at the token endpoint.",
        "flows": {"password": {"tokenUrl": token_path, "scopes": {}}}})
    spec.components.security_scheme("clientBasic", {
        "type": "http", "scheme": "basic",
        "description": "A service client's client_id and client_secret (or send them in the form)."})

    wanted = {pair for _, _, operation in routes for pair in _models_of(operation)}
    wanted |= {(responses.Error, "serialization"), (responses.OAuthError, "serialization")}
    ordered = sorted(wanted, key=lambda pair: (pair[0].__name__, pair[1]))
    refs, definitions = models_json_schema(ordered, ref_template=REF, schema_generator=_Schemas)
    for name, schema in sorted(definitions.get("$defs", {}).items()):
        spec.components.schema(name, component=schema)

    tags: dict[str, str] = {}
    paths: dict[str, dict[str, dict]] = {}
    for rule, view, operation in routes:
        path = PATH_ARGUMENT.sub(r"{\1}", rule.rule)
        arguments = PATH_ARGUMENT.findall(rule.rule)
        tag = _tag(view)
        module_doc = (inspect.getdoc(sys.modules.get(view.__module__)) or "").partition("\n")[0]
        tags.setdefault(tag, module_doc)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation_object(view, operation, rule.endpoint,
                                                                           arguments, refs)
    for tag, text in sorted(tags.items()):
        spec.tag({"name": tag, "description": text})
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()
