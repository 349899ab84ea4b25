"""The OpenAPI 3.1 document of the router's client API: what it publishes as ``docs/openapi.json``.

Owns the description of every path a client calls (the OpenAI chat, completions, embeddings and
models endpoints, Anthropic's ``/v1/messages``, the health and metrics endpoints); the admin API
is the operator's and is left out. Request bodies list the fields the router reads or checks
and allow any other (they are forwarded byte for byte). ``tests/component/router/test_openapi.py``
keeps the document and the routes the app serves the same, and the fuzz run
(``tests/component/router/openapi_fuzz.py``) generates its requests from it. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, Final

from inferscale import __version__

JSON: Final = "application/json"

_ERROR: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": ["string", "null"]},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_TEXT_PART: Final = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
}
_CONTENT: Final = {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]}
_STREAM: Final = {
    "stream": {"type": "boolean", "description": "Answer as server-sent events."},
    "stream_options": {
        "type": "object",
        "properties": {"include_usage": {"type": "boolean"}},
        "description": "OpenAI's stream options (the router adds usage to the last chunk).",
    },
}
_SAMPLING: Final = {
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "n": {"type": "integer", "minimum": 1, "maximum": 8},
    "seed": {"type": "integer"},
    "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "user": {"type": "string"},
}
_MODEL: Final = {
    "type": "string",
    "minLength": 1,
    "description": "An InferenceModel's name (or an adapter's, or a selecting route's).",
}


def _body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


CHAT_REQUEST: Final = _body(
    ["model", "messages"],
    {
        "model": _MODEL,
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": _body(
                ["role", "content"],
                {
                    "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
                    "content": _CONTENT,
                    "name": {"type": "string"},
                },
            ),
        },
        **_STREAM,
        **_SAMPLING,
        "max_completion_tokens": {"type": "integer", "minimum": 1},
    },
)
COMPLETION_REQUEST: Final = _body(
    ["model", "prompt"],
    {
        "model": _MODEL,
        "prompt": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        **_STREAM,
        **_SAMPLING,
    },
)
EMBEDDING_REQUEST: Final = _body(
    ["model", "input"],
    {
        "model": _MODEL,
        "input": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
            ]
        },
        "encoding_format": {"enum": ["float", "base64"]},
        "dimensions": {"type": "integer", "minimum": 1},
        "user": {"type": "string"},
    },
)
MESSAGES_REQUEST: Final = _body(
    ["model", "max_tokens", "messages"],
    {
        "model": _MODEL,
        "max_tokens": {"type": "integer", "minimum": 1},
        "system": _CONTENT,
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": _body(
                ["role", "content"],
                {"role": {"enum": ["user", "assistant"]}, "content": _CONTENT},
            ),
        },
        "stream": {"type": "boolean"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "stop_sequences": {"type": "array", "items": {"type": "string"}},
    },
)
MODEL_OBJECT: Final = _body(
    ["id", "object"],
    {"id": {"type": "string"}, "object": {"const": "model"}, "owned_by": {"type": "string"}},
)


def _errors(*statuses: int) -> dict[str, Any]:
    why = {
        400: "A body the router cannot route (bad JSON, a missing or wrong-typed field).",
        401: "No known client key where one is required.",
        403: "The client key may not use this model.",
        404: "No such model (or no such path).",
        408: "The body was not sent in time (the connection closes).",
        413: "The body is over the router's limit (the connection closes).",
        429: "A client limit or budget (``Retry-After`` says when).",
        503: "Held too long, the hold queue full, the model removed, or too many connections.",
    }
    return {
        str(s): {
            "description": why[s],
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for s in statuses
    }


def _post(summary: str, schema: dict[str, Any], streams: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {JSON: {"schema": {"type": "object"}}}
    if streams:
        ok["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {JSON: {"schema": schema}}},
            "responses": {
                "200": {"description": "The backend's answer.", "content": ok},
                **_errors(400, 401, 403, 404, 408, 413, 429, 503),
            },
        }
    }


def _get(summary: str, content: dict[str, Any], *errors: int) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": summary, "content": content}, **_errors(*errors)},
        }
    }


_PLAIN: Final = {"text/plain": {"schema": {"type": "string"}}}


def build() -> dict[str, Any]:
    """The document (a new dict each call)."""
    model_list = _body(
        ["object", "data"],
        {"object": {"const": "list"}, "data": {"type": "array", "items": MODEL_OBJECT}},
    )
    model_get = _get("One model.", {JSON: {"schema": MODEL_OBJECT}}, 401, 404)
    model_get["get"]["parameters"] = [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
    ]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "inferscale router",
            "version": __version__,
            "description": "The OpenAI-compatible API of the inferscale router (docs/router.md).",
        },
        "paths": {
            "/v1/chat/completions": _post("Chat completion.", CHAT_REQUEST, streams=True),
            "/v1/completions": _post("Text completion.", COMPLETION_REQUEST, streams=True),
            "/v1/embeddings": _post("Embeddings.", EMBEDDING_REQUEST, streams=False),
            "/v1/messages": _post("Anthropic Messages.", MESSAGES_REQUEST, streams=True),
            "/v1/models": _get("The models served.", {JSON: {"schema": model_list}}, 401),
            "/v1/models/{id}": model_get,
            "/health": _get("Alive (no body).", _PLAIN),
            "/healthz": _get("Alive.", _PLAIN),
            "/readyz": _get("Ready to serve (503 while draining or before a table).", _PLAIN),
            "/metrics": _get("Prometheus text format.", _PLAIN),
        },
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {
                "clientKey": {"type": "http", "scheme": "bearer"},
                "anthropicKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{}, {"clientKey": []}, {"anthropicKey": []}],
    }
