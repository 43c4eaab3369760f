"""Metric labels stay bounded: route templates, known event types, nothing a caller made up.

The HTTP middleware runs outside authentication, so a request refused before routing
(401) is still counted under its route template; a path no route matches is
`unmatched`, whatever it was; probes are not counted. Event types that the contracts
do not know become `unregistered`.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from prometheus_client import REGISTRY

from linli.servicekit import metrics
from linli.servicekit.db import load_migrations
from linli.servicekit.http import create_http_app
from linli.servicekit.runtime import ServiceRuntime
from linli.servicekit.settings import ServiceSettings

pytestmark = pytest.mark.unit


def requests(method: str, route: str, status: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "linli_http_requests_total", {"method": method, "route": route, "status": status}
        )
        or 0.0
    )


class _NoPool:
    """Stands in for the pool: a request without a token never reaches it."""

    def acquire(self) -> Any:
        raise AssertionError("the pool was used")


@pytest.fixture
def app() -> Any:
    runtime = ServiceRuntime(
        ServiceSettings(service_name="labels", environment="test"),
        load_migrations("linli.servicekit", "servicekit"),
    )
    runtime._pool = _NoPool()  # type: ignore[assignment]
    app = create_http_app(runtime, title="t", description="d")
    router = APIRouter()

    @router.get("/v1/communities/{community}/things/{thing_id}")
    async def thing(community: str, thing_id: str) -> dict[str, str]:
        return {"community": community}

    @router.get("/public/{name}")
    async def public(name: str) -> dict[str, str]:
        return {"name": name}

    app.include_router(router)
    return app


async def test_routes_are_labelled_by_template_even_when_refused_before_routing(app: Any) -> None:
    template = "/v1/communities/{community}/things/{thing_id}"
    before = {
        "refused": requests("GET", template, "401"),
        "public": requests("GET", "/public/{name}", "200"),
        "unmatched": requests("GET", metrics.UNMATCHED, "404"),
    }
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for n in range(3):
            assert (await client.get(f"/v1/communities/c{n}/things/{n}")).status_code == 401
        assert (await client.get("/public/alice")).status_code == 200
        assert (await client.get("/public/bob")).status_code == 200
        for n in range(5):
            assert (await client.get(f"/scanner/{n}/wp-admin")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200

    assert requests("GET", template, "401") - before["refused"] == 3
    assert requests("GET", "/public/{name}", "200") - before["public"] == 2
    assert requests("GET", metrics.UNMATCHED, "404") - before["unmatched"] == 5
    # No series was minted for a concrete path, a name, or a probe.
    routes = {
        s.labels["route"]
        for family in REGISTRY.collect()
        if family.name == "linli_http_requests"
        for s in family.samples
    }
    assert not any(r.startswith(("/scanner", "/public/alice", "/healthz")) for r in routes)
    assert not any("c1" in r or "bob" in r for r in routes)


def test_unknown_event_types_share_one_label() -> None:
    assert metrics.event_type("linli.need.submitted.v1") == "linli.need.submitted.v1"
    assert metrics.event_type("linli.need.submitted.v99") == metrics.UNREGISTERED
    assert metrics.event_type("linli.attacker.made-up.v1") == metrics.UNREGISTERED
    assert metrics.event_type("") == metrics.UNREGISTERED
    assert metrics.event_type(None) == metrics.UNREGISTERED


def test_a_gauge_keeps_series_only_for_what_is_open_now() -> None:
    gauge = metrics.NEEDS_SLA
    breached = {"community": "labels-a", "kind": "meal", "state": "breached"}
    at_risk = {**breached, "state": "at_risk"}
    metrics.set_labelled(
        gauge, [(("labels-a", "meal", "breached"), 3.0), (("labels-a", "meal", "at_risk"), 0.0)]
    )
    assert REGISTRY.get_sample_value("linli_needs_sla", breached) == 3.0
    assert REGISTRY.get_sample_value("linli_needs_sla", at_risk) is None  # zero: no series
    metrics.set_labelled(gauge, [])
    assert REGISTRY.get_sample_value("linli_needs_sla", breached) is None
