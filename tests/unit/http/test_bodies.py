"""The request-body helper: one specific status for each way a JSON body can be wrong."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from wirthforge_ws.http.bodies import BadBody, json_body


def _client(**options: Any) -> TestClient:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> JSONResponse:
        try:
            body = await json_body(request, **options)
        except BadBody as bad:
            return bad.response()
        return JSONResponse({"got": body})

    return TestClient(app)


def test_a_json_body_is_parsed() -> None:
    response = _client().post("/echo", content=b'[1, {"a": 2}]')
    assert response.status_code == 200
    assert response.json() == {"got": [1, {"a": 2}]}


@pytest.mark.parametrize("raw", [b"{not json", b"NaN", b'{"x": Infinity}', b""])
def test_not_json_is_400(raw: bytes) -> None:
    response = _client().post("/echo", content=raw)
    assert response.status_code == 400
    assert response.json() == {"error": "body is not JSON"}


def test_a_body_over_the_limit_is_413() -> None:
    client = _client(max_bytes=16)
    assert client.post("/echo", content=b'{"a": "' + b"x" * 20 + b'"}').status_code == 413
    assert client.post("/echo", content=b'{"a": 1}').status_code == 200


def test_a_required_content_type_is_415_when_missing() -> None:
    client = _client(content_type="application/json")
    assert client.post("/echo", content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post("/echo", content=b"{}", headers={"Content-Type": "application/json; charset=utf-8"}).json() == {
        "got": {}
    }


def test_the_wrong_top_level_shape_is_422() -> None:
    response = _client(shape=dict).post("/echo", content=b"[]")
    assert response.status_code == 422
    assert response.json() == {"error": "send a JSON object"}
