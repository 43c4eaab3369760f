"""The cross-community attack's own rules, without servers: it talks to loopback only,
puts B's values where a route takes an id, and counts a 2xx as a violation unless it is
one of the documented inert references (docs/adr/0032)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[3])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from faults.cross_community import Run, Values, _generate, attack, body_fields, place  # noqa: E402

pytestmark = pytest.mark.unit

DOC = {
    "openapi": "3.1.0",
    "info": {"title": "t", "version": "1"},
    "paths": {
        "/v1/communities/{community}/needs": {
            "post": {
                "parameters": [
                    {
                        "name": "community",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/N"}}},
                },
                "responses": {"201": {"description": "ok"}},
            }
        },
        "/v1/communities/{community}/needs/{need_id}": {
            "get": {
                "parameters": [
                    {
                        "name": "community",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "need_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    },
                ],
                "responses": {"200": {"description": "ok"}},
            }
        },
    },
    "components": {
        "schemas": {
            "N": {
                "type": "object",
                "properties": {
                    "resident_id": {"type": "string", "format": "uuid"},
                    "note": {"type": "string"},
                },
                "required": ["resident_id"],
            }
        }
    },
}
B = Values({"community": ["b"], "need_id": ["n1", "n2"], "resident_id": ["r1"]})


async def test_anything_but_loopback_is_refused_before_a_request() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await attack({"intake": "http://10.1.2.3:8101"}, "lnl_x", {"community": ["b"]})


def test_b_values_go_into_path_and_body() -> None:
    generated = {op.path: cases for op, cases in _generate(DOC, 2, 1)}
    get = generated["/v1/communities/{community}/needs/{need_id}"][0]
    assert place(get, {}, B, 1, "b") == ["community", "need_id"]
    assert get.path_parameters == {"community": "b", "need_id": "n2"}
    # A's own community in the path: only B's id counts as placed.
    assert place(get, {}, B, 0, "a") == ["need_id"]

    post = generated["/v1/communities/{community}/needs"][0]
    fields = body_fields(DOC, "/v1/communities/{community}/needs", "post")
    assert set(fields) == {"resident_id", "note"}
    assert place(post, fields, B, 0, "a") == ["body.resident_id"]
    assert post.body["resident_id"] == "r1"


def test_a_2xx_is_a_violation_unless_inert() -> None:
    run = Run()
    sent = {"method": "GET", "path": "/x", "operation": "GET /x", "placed": [], "template": False}
    run.record("intake", "operator", "GET /x", sent, 200, None, False)
    run.record("notifications", "operator", "POST /y", sent, 201, None, True)
    run.record("intake", "operator", "GET /x", sent, 404, "ZZCANARY-B", False)
    result = run.result(0.0)
    assert (result["two_xx"], result["inert_two_xx"], result["leaks"]) == (1, 1, 1)
    assert len(result["violations"]) == len(result["inert_samples"]) == 1
