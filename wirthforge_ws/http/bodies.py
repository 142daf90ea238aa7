"""Reading a route's JSON request body, with one set of answers for everything that can be wrong with it.

A route calls :func:`json_body` and turns a :class:`BadBody` into its
response; each failure has its own status so that a client can act on it:
``415`` (wrong content type, when the route asks for one), ``413`` (larger
than the route's limit; the rest is not read), ``400`` (not JSON) and
``422`` (JSON, but not the shape the route takes). The body is parsed with
orjson, not json: orjson refuses NaN and Infinity, which no schema bound
catches.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse


class BadBody(Exception):
    """A request body the route cannot take: the status and the message of the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> JSONResponse:
        """The answer: ``{"error": message}`` with the status."""
        return JSONResponse({"error": self.message}, status_code=self.status)


async def json_body(
    request: Request,
    *,
    max_bytes: int | None = None,
    content_type: str | None = None,
    shape: type[dict[str, Any]] | type[list[Any]] | None = None,
) -> Any:
    """The parsed body of *request*; raises :class:`BadBody`.

    *content_type* (e.g. ``"application/json"``) is required when given;
    *max_bytes* bounds the body, read chunk by chunk and no further than
    the bound; *shape* (``dict`` or ``list``) is the JSON type the route
    takes at the top level.
    """
    if content_type is not None:
        sent = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if sent != content_type:
            raise BadBody(415, f"send the body as {content_type}")
    if max_bytes is None:
        raw = await request.body()
    else:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) > max_bytes:
                raise BadBody(413, f"the request is larger than {max_bytes} bytes")
        raw = bytes(buffer)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadBody(400, "body is not JSON") from None
    if shape is not None and not isinstance(body, shape):
        raise BadBody(422, "send a JSON object" if shape is dict else "send a JSON array")
    return body
