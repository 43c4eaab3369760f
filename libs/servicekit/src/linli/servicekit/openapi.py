"""OpenAPI that says what the service does (ADR 0047), declared in one place.

Every service's `app.openapi` is post-processed here (`create_http_app` installs it), so
a route written tomorrow gets the same declarations without a line of its own:

* every error status answers Linli's one error body (`errors.ErrorBody`), documented as
  the component `ErrorBody`; FastAPI's `HTTPValidationError` / `ValidationError`
  components are dropped (Linli never sends them);
* the statuses every route of a kind can answer are added by rule (`universal_statuses`):
  401, 403 and 503 on every authenticated operation (`/v1/...`: the auth middleware
  answers them before the route runs), and 401 wherever the operation names a security
  scheme; 429 and 503 on public ones (`/public/...`: rate
  limited in the database); 404 where the path names a community or an id; 422 where
  there is any input; 413 where there is a body; 409 on every write (it meets the state of
  what it changes) and wherever an `Idempotency-Key` is taken;
* statuses only some routes answer (a 409 for a state conflict, a 410 for an expired
  link) are declared on the route or its router with `errors(409, ...)`, and get the
  error body here;
* links from a create to the operations on what it created (`POST /needs` ->
  `GET /needs/{need_id}`), so a stateful client (schemathesis' stateful phase) can chain
  them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from .errors import ErrorBody

__all__ = ["ERROR_DESCRIPTIONS", "RULES", "errors", "install", "rules", "truthful"]

ERROR_BODY_REF = "#/components/schemas/ErrorBody"
AUTHENTICATED_PREFIX = "/v1/"
PUBLIC_PREFIX = "/public/"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
WRITE_METHODS = frozenset({"put", "post", "delete", "patch"})
FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The request is malformed (a header or parameter that cannot be read). "
    "`{error: bad_request, detail}`.",
    401: "No bearer token, or one that is unknown, expired or revoked. "
    "`{error: unauthorized, detail}` with `WWW-Authenticate: Bearer`.",
    403: "The credential's role may not use this route: e.g. a street_office credential "
    "on a write or on residents' personal data (ADR 0040). `{error: forbidden, detail}`.",
    404: "The community, or an id in the path, does not exist or is not the caller's "
    "(another community's ids answer 404, never 403). `{error: not_found, detail}`.",
    409: "The request conflicts with the current state of the resource, or an "
    "`Idempotency-Key` was used with a different request. `{error: conflict, detail}`.",
    410: "The resource existed and is gone for good (an expired or spent link). `{error, detail}`.",
    413: "The request body is over the service's size limit. `{error: payload_too_large, detail}`.",
    415: "The request body's media type is not one the route takes. "
    "`{error: unsupported_media_type, detail}`.",
    422: "The input is invalid: `{error: validation_failed, detail: [{field, message, "
    "code}]}` (reasons per field; input values are never echoed).",
    429: "Too many requests from this client; retry after `Retry-After` seconds. "
    "`{error: too_many_requests, detail}`.",
    503: "A dependency (database, NATS) is unavailable; retry after `Retry-After` "
    "seconds. `{error: unavailable, detail}`.",
}


def errors(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route (or router) that answers these error statuses beyond the
    universal ones: `responses=errors(409)`, or with a route's own wording
    `errors(409, s409="the activity is already published")`. The body schema is the one
    error body (filled in by `truthful`)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        text = descriptions.get(f"s{status}") or ERROR_DESCRIPTIONS.get(status, "An error.")
        out[status] = {"description": text}
    return out


RULES = "x-linli-rules"
"""Operation extension: rules on the parameters that JSON Schema cannot state (one
parameter against another). A schema-valid request that breaks one answers 422 with the
reason. Bodies may always carry such rules (ADR 0047); parameters only where declared."""


def rules(*sentences: str) -> dict[str, Any]:
    """`openapi_extra=` for a route whose parameters have rules beyond the schema, e.g.
    `rules("`since` is before `until`")`: listed under `x-linli-rules` and in the
    operation's 422 description."""
    return {RULES: list(sentences)}


def universal_statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer because of what it is, not what it
    does: who may call it, what input it takes, where it lives."""
    found: set[int] = set()
    parameters = [p for p in operation.get("parameters", []) if isinstance(p, dict)]
    has_body = "requestBody" in operation
    if path.startswith(AUTHENTICATED_PREFIX):
        found |= {401, 403, 503}
    elif path.startswith(PUBLIC_PREFIX):
        found |= {429, 503}
    if any(operation.get("security") or ()):
        # A route that checks a credential of its own (an API key, a bearer token
        # outside `/v1`) refuses a missing or unknown one.
        found.add(401)
    if any(p.get("in") == "path" for p in parameters):
        found.add(404)
    if has_body:
        found |= {413, 422}
    if parameters:
        found.add(422)
    if method in WRITE_METHODS or any(
        p.get("in") == "header" and str(p.get("name", "")).lower() == "idempotency-key"
        for p in parameters
    ):
        # A write meets the state of what it changes (an answered offer, a withdrawn
        # slot, a published activity, a reused Idempotency-Key): every write may conflict.
        found.add(409)
    return found


def _error_answer(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": ERROR_BODY_REF}}},
    }


def _not_null(parameter: dict[str, Any]) -> None:
    """A parameter is optional by `required: false`, never null: FastAPI writes
    `X | None` as `anyOf: [X, {type: null}]`, and a client then sends the word `null`
    (which the server reads as a string and refuses)."""
    schema = parameter.get("schema")
    if not isinstance(schema, dict) or "anyOf" not in schema:
        return
    kept = [s for s in schema["anyOf"] if s != {"type": "null"}]
    if len(kept) == len(schema["anyOf"]):
        return
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    if rest.get("default", 0) is None:
        rest.pop("default")
    parameter["schema"] = {**kept[0], **rest} if len(kept) == 1 else {**rest, "anyOf": kept}


def _declares_own_body(answer: dict[str, Any]) -> bool:
    """A route that documents a real body for an error status keeps it (/readyz's 503
    carries the checks); FastAPI's placeholders (no schema, HTTPValidationError) do not."""
    content = answer.get("content") or {}
    schemas = [media.get("schema") or {} for media in content.values() if isinstance(media, dict)]
    return any(s and not (_refs(s) & set(FASTAPI_VALIDATION)) for s in schemas)


def _refs(node: Any) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                found.add(ref.rsplit("/", 1)[-1])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def truthful(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a FastAPI-generated document in place (see the module); returns it."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in body.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components["ErrorBody"] = body
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in METHODS or not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", []):
                _not_null(parameter)
            responses = operation.setdefault("responses", {})
            wanted = universal_statuses(path, method, operation)
            if "400" in responses:
                # A facade whose standard answers bad input with 400 (Open311, ADR 0050)
                # declares that itself; it never answers 422.
                wanted.discard(422)
            for status in sorted(wanted):
                responses.setdefault(str(status), {"description": ERROR_DESCRIPTIONS[status]})
            for status, answer in list(responses.items()):
                if not str(status).isdigit() or int(status) < 400:
                    continue
                description = answer.get("description") or ERROR_DESCRIPTIONS.get(
                    int(status), "An error."
                )
                if int(status) == 422 and description == "Validation Error":
                    description = ERROR_DESCRIPTIONS[422]
                if int(status) == 422 and operation.get(RULES):
                    description += " Also: " + "; ".join(operation[RULES]) + "."
                if _declares_own_body(answer):
                    continue
                responses[status] = _error_answer(description)
            operation["responses"] = dict(sorted(responses.items()))
    _add_links(schema)
    used = _refs({k: v for k, v in schema.items() if k != "components"})
    used |= _refs({k: v for k, v in components.items() if k not in FASTAPI_VALIDATION})
    for name in FASTAPI_VALIDATION:
        if name not in used:
            components.pop(name, None)
    return schema


_PARAM = re.compile(r"\{([^}/]+)\}")


def _add_links(schema: dict[str, Any]) -> None:
    """`POST /x` answering 201 with an `id` links to `GET|PATCH|PUT|DELETE /x/{x_id}`
    and to `POST /x/{x_id}/<action>` (the id from the body, the other path parameters
    from the request)."""
    paths: dict[str, Any] = schema.get("paths", {})
    for path, operations in paths.items():
        create = operations.get("post")
        if not isinstance(create, dict):
            continue
        answer = create.get("responses", {}).get("201")
        if not answer or not _answers_id(schema, answer):
            continue
        links: dict[str, Any] = {}
        for other, other_ops in paths.items():
            rest = other[len(path) :] if other.startswith(path + "/") else None
            if rest is None:
                continue
            segments = rest.strip("/").split("/")
            match = _PARAM.fullmatch(segments[0])
            if match is None or len(segments) > 2:
                continue
            id_name = match.group(1)
            for method, target in other_ops.items():
                if method not in METHODS or not isinstance(target, dict):
                    continue
                if len(segments) == 2 and method != "post":
                    continue
                operation_id = target.get("operationId")
                if not operation_id:
                    continue
                parameters = {name: f"$request.path.{name}" for name in _PARAM.findall(path)}
                parameters[id_name] = "$response.body#/id"
                label = f"{method.upper()} {other}"
                links[re.sub(r"[^A-Za-z0-9_.-]", "_", label)] = {
                    "operationId": operation_id,
                    "parameters": parameters,
                    "description": f"The created resource's `id` as `{id_name}` of {label}.",
                }
        if links:
            answer.setdefault("links", {}).update(links)


def _answers_id(schema: dict[str, Any], answer: dict[str, Any]) -> bool:
    content = answer.get("content", {}).get("application/json", {})
    node = content.get("schema", {})
    for _ in range(4):
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not ref:
            break
        node = schema.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[-1], {})
    return isinstance(node, dict) and "id" in node.get("properties", {})


def install(app: FastAPI) -> None:
    """Make `app.openapi` answer the truthful document (built once, then cached)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = truthful(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
