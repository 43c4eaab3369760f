"""Cross-community attack (RELIABILITY.md row 11, issue #10 "Attacks").

schemathesis generates requests for every operation of every service's OpenAPI document;
before each request is sent, every path parameter, query parameter and top-level body
field that names a community or an id is set to community B's real values, and the
request goes out with a credential of community A. Any 2xx answer is a violation: A's
credential read or changed something of B's.

Two shapes of every operation are sent:

* `b`: B's community in the path (when the route has one) and B's ids everywhere else;
* `a`: A's own community in the path and B's ids in the other places (a lookup or a
  reference that forgets to check the id's community), sent only when at least one B id
  could be placed; a request that names nothing of B's proves nothing and is not sent.

schemathesis only generates (`APIOperation.as_strategy`, Hypothesis with a fixed seed,
`examples` cases per operation); the requests are sent here with httpx, so the answer's
status is classified before any body is read (an event stream is never waited on), a
bounded prefix of each body is searched for B's canaries (`leaks`), and nothing but a
loopback address is ever contacted (ValueError otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
BODY_PREFIX = 64 * 1024
"""Bytes of an answer searched for canaries (an answer is never read further)."""
MAX_VIOLATIONS = 20

COMMUNITY = "community"
SKIP_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
INERT_REFERENCES: Mapping[str, frozenset[str]] = {
    "notifications POST /v1/communities/{community}/recipients": frozenset(
        {"body.resident_id", "body.volunteer_id"}
    ),
    # A partner's delivery preferences in A's community (ADR 0043): the same kind of
    # unverified reference; they are told only of A's events naming that partner.
    **{
        f"notifications {method} /v1/communities/{{community}}/partners/{{partner_id}}/delivery": (
            frozenset({"partner_id"})
        )
        for method in ("GET", "PUT", "DELETE")
    },
}
"""Fields whose 2xx, in A's own community, is not access to B (docs/adr/0032): a
recipient's resident or volunteer is an unverified, community-local reference (messages
match events by community and id, so A's recipient never hears of B's events) that
notifications, which owns neither, accepts for any id alike (no existence oracle). Such
2xx answers are counted in `inert_two_xx`, not in `two_xx`; B's community in the path,
or any other B value in the same request, is never inert."""
_GENERATING = threading.Lock()
"""One generation at a time: Hypothesis is not thread-safe, and CPython 3.11's `ast.parse`
(which schemathesis reaches) fails with "AST constructor recursion depth mismatch" when
two threads parse at once."""

Tokens = str | Mapping[str, str | Mapping[str, str]]
"""One token for every service, or role label -> token (every service) or
role label -> {service: token} (only the services where that credential exists)."""


def _check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"the cross-community attack only talks to loopback, not {url!r}")


def _tokens_by_role(tokens: Tokens, services: Iterable[str]) -> dict[str, dict[str, str]]:
    names = list(services)
    if isinstance(tokens, str):
        return {"operator": dict.fromkeys(names, tokens)}
    out: dict[str, dict[str, str]] = {}
    for role, value in tokens.items():
        if isinstance(value, str):
            out[role] = dict.fromkeys(names, value)
        else:
            out[role] = {s: t for s, t in value.items() if s in names}
    return out


# --- where B's values go ----------------------------------------------------------------


def _resolve(doc: Mapping[str, Any], schema: Any, depth: int = 0) -> list[Mapping[str, Any]]:
    """The object schemas a body schema may be (through $ref, oneOf, anyOf, allOf)."""
    if not isinstance(schema, Mapping) or depth > 8:
        return []
    if "$ref" in schema:
        node: Any = doc
        for part in str(schema["$ref"]).removeprefix("#/").split("/"):
            node = node.get(part, {}) if isinstance(node, Mapping) else {}
        return _resolve(doc, node, depth + 1)
    found: list[Mapping[str, Any]] = [schema] if "properties" in schema else []
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in schema.get(key, []):
            found.extend(_resolve(doc, sub, depth + 1))
    return found


def body_fields(doc: Mapping[str, Any], path: str, method: str) -> dict[str, Any]:
    """Top-level body property name -> its schema, over every variant of the body."""
    op = doc.get("paths", {}).get(path, {}).get(method.lower(), {})
    content = op.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    fields: dict[str, Any] = {}
    for variant in _resolve(doc, schema):
        fields.update(variant.get("properties", {}))
    return fields


@dataclass
class Values:
    """Community B's values, by the parameter or field name that takes them."""

    ids: Mapping[str, Sequence[str]]

    def longest(self) -> int:
        return max((len(v) for v in self.ids.values()), default=1) or 1

    def community(self) -> str | None:
        got = self.ids.get(COMMUNITY) or ()
        return got[0] if got else None

    def pick(self, name: str, i: int) -> str | None:
        if name == "party_id":  # contact lookup: a volunteer or a partner
            pool = [*self.ids.get("volunteer_id", ()), *self.ids.get("partner_id", ())]
        else:
            pool = list(self.ids.get(name, ()))
        return pool[i % len(pool)] if pool else None

    def party(self, i: int) -> dict[str, str] | None:
        for kind in ("volunteer", "partner"):
            value = self.pick(f"{kind}_id", i)
            if value is not None:
                return {"kind": kind, "id": value}
        return None


def place(
    case: Any,
    fields: Mapping[str, Any],
    values: Values,
    i: int,
    community: str | None,
    *,
    present_only: bool = False,
) -> list[str]:
    """Put B's values into a case; `community` goes into a `{community}` path parameter.
    Every body field the operation declares that names an id is set (only the fields the
    body already has with `present_only`, for a caller's template). Returns the names that
    now carry B's values (the community parameter counts only when it is B's)."""
    placed: list[str] = []
    b_community = values.community()
    for param in case.operation.iter_parameters():
        location = str(getattr(param.location, "value", param.location))
        name = param.name
        if location not in ("path", "query"):
            continue
        target = case.path_parameters if location == "path" else case.query
        if name == COMMUNITY and location == "path":
            if community is not None:
                target[name] = community
                if community == b_community:
                    placed.append(name)
            continue
        value = b_community if name == COMMUNITY else values.pick(name, i)
        if value is None:
            continue
        target[name] = value
        placed.append(name)
        if name == "party_id" and "party_kind" in {
            p.name for p in case.operation.iter_parameters()
        }:
            target["party_kind"] = (
                "volunteer" if value in values.ids.get("volunteer_id", ()) else "partner"
            )
    body = case.body
    if isinstance(body, dict):
        for name in fields:
            if present_only and name not in body:
                continue
            if name == "communities" and b_community is not None:
                body[name] = [b_community]
            elif name == COMMUNITY and b_community is not None:
                body[name] = b_community
            elif name == "provider" and (party := values.party(i)) is not None:
                body[name] = party
            elif (value := values.pick(name, i)) is not None:
                body[name] = value
            else:
                continue
            placed.append(f"body.{name}")
    return placed


# --- counting ---------------------------------------------------------------------------


@dataclass
class Tally:
    requests: int = 0
    two_xx: int = 0
    inert_two_xx: int = 0
    server_errors: int = 0
    errors: int = 0
    leaks: int = 0
    by_status: Counter[str] = field(default_factory=Counter)

    def add(self, status: int | None, leaked: bool, inert: bool = False) -> None:
        self.requests += 1
        if status is None:
            self.errors += 1
            self.by_status["error"] += 1
            return
        self.by_status[str(status)] += 1
        if 200 <= status < 300:
            if inert:
                self.inert_two_xx += 1
            else:
                self.two_xx += 1
        if status >= 500:
            self.server_errors += 1
        if leaked:
            self.leaks += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "two_xx": self.two_xx,
            "inert_two_xx": self.inert_two_xx,
            "server_errors": self.server_errors,
            "errors": self.errors,
            "leaks": self.leaks,
            "by_status": dict(sorted(self.by_status.items())),
        }


@dataclass
class Run:
    total: Tally = field(default_factory=Tally)
    services: dict[str, Tally] = field(default_factory=dict)
    roles: dict[str, Tally] = field(default_factory=dict)
    operations: dict[str, Tally] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    violations: list[dict[str, Any]] = field(default_factory=list)
    inert_samples: list[dict[str, Any]] = field(default_factory=list)
    leak_samples: list[dict[str, Any]] = field(default_factory=list)

    def record(
        self,
        service: str,
        role: str,
        label: str,
        sent: dict[str, Any],
        status: int | None,
        leaked: str | None,
        inert: bool,
    ) -> None:
        for tally in (
            self.total,
            self.services.setdefault(service, Tally()),
            self.roles.setdefault(role, Tally()),
            self.operations.setdefault(f"{service} {label}", Tally()),
        ):
            tally.add(status, leaked is not None, inert)
        if status is not None and 200 <= status < 300:
            seen = self.inert_samples if inert else self.violations
            if len(seen) < MAX_VIOLATIONS:
                seen.append({"service": service, "role": role, **sent, "status": status})
        if leaked is not None and len(self.leak_samples) < MAX_VIOLATIONS:
            self.leak_samples.append({"service": service, "role": role, **sent, "status": status})

    def result(self, seconds: float) -> dict[str, Any]:
        return {
            **self.total.as_dict(),
            "seconds": round(seconds, 1),
            "by_service": {
                name: {**t.as_dict(), "skipped": self.skipped.get(name, [])}
                for name, t in sorted(self.services.items())
            },
            "by_role": {name: t.as_dict() for name, t in sorted(self.roles.items())},
            "by_operation": {
                name: {
                    "requests": t.requests,
                    "two_xx": t.two_xx,
                    "inert_two_xx": t.inert_two_xx,
                    "by_status": dict(sorted(t.by_status.items())),
                }
                for name, t in sorted(self.operations.items())
            },
            "violations": self.violations,
            "inert_samples": self.inert_samples,
            "leak_samples": self.leak_samples,
        }


# --- generation (schemathesis, in a thread) -----------------------------------------------


def _generate(doc: dict[str, Any], examples: int, seed: int) -> list[tuple[Any, list[Any]]]:
    """(operation, cases) for every operation of the document: at most `examples` cases
    each, from Hypothesis with a fixed seed (the same document gives the same cases)."""
    import schemathesis

    with _GENERATING:
        return _generate_locked(schemathesis.openapi.from_dict(doc), examples, seed)


def _generate_locked(schema: Any, examples: int, seed: int) -> list[tuple[Any, list[Any]]]:
    out: list[tuple[Any, list[Any]]] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        # Public routes take no credential, so A's credentials cannot misuse them; what
        # they reveal for any community is their own tests' business (ADR 0043, 0051).
        if operation.path not in SKIP_PATHS and not operation.path.startswith("/public/"):
            out.append((operation, _cases(operation, examples, seed)))
    return out


def _cases(operation: Any, examples: int, seed: int) -> list[Any]:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    cases: list[Any] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy())
    def collect(case: Any) -> None:
        cases.append(case)

    collect()
    return cases[:examples]


# --- the attack ---------------------------------------------------------------------------


async def _send(
    client: httpx.AsyncClient, kwargs: dict[str, Any], token: str, canaries: Sequence[str]
) -> tuple[int | None, str | None]:
    """Send one serialized case; (status, the canary found in the answer or None)."""
    url = str(kwargs["url"])
    _check_loopback(url)
    headers = {
        k: str(v) for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "authorization"
    }
    headers["Authorization"] = f"Bearer {token}"
    content: Any = None
    if "json" not in kwargs and kwargs.get("data") is not None:
        content = kwargs["data"]
        if isinstance(content, str):
            content = content.encode()
        elif not isinstance(content, bytes):
            return None, None  # a multipart or form body: no route here takes one
    request = client.build_request(
        str(kwargs["method"]),
        url,
        params=kwargs.get("params") or None,
        headers=headers,
        json=kwargs.get("json"),
        content=content,
    )
    try:
        response = await client.send(request, stream=True)
    except (httpx.HTTPError, UnicodeError):
        return None, None
    leaked: str | None = None
    try:
        if "text/event-stream" not in response.headers.get("content-type", ""):
            body = b""
            with contextlib.suppress(httpx.HTTPError):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= BODY_PREFIX:
                        break
            text = body[:BODY_PREFIX].decode("utf-8", "replace")
            leaked = next((c for c in canaries if c and c in text), None)
    finally:
        await response.aclose()
    return response.status_code, leaked


def _describe(
    case: Any, kwargs: dict[str, Any], placed: list[str], template: bool
) -> dict[str, Any]:
    return {
        "method": str(kwargs["method"]).upper(),
        "path": urlsplit(str(kwargs["url"])).path,
        "operation": f"{case.method.upper()} {case.path}",
        "placed": placed,
        "template": template,
    }


async def _attack_service(
    service: str,
    base: str,
    roles: Mapping[str, Mapping[str, str]],
    values: Values,
    community_a: str | None,
    examples: int,
    seed: int,
    canaries: Sequence[str],
    timeout_s: float,
    bodies: Mapping[str, Sequence[Any]],
    only: Collection[str] | None,
    inert: Mapping[str, Collection[str]],
    run: Run,
) -> None:
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        answer = await client.get(f"{base}/openapi.json")
        answer.raise_for_status()
        doc = answer.json()
        generated = await asyncio.to_thread(_generate, doc, examples, seed)
        skipped = run.skipped.setdefault(service, [])
        for operation, cases in generated:
            label = f"{operation.method.upper()} {operation.path}"
            if only is not None and f"{service} {label}" not in only:
                continue
            fields = body_fields(doc, operation.path, operation.method)
            has_community = any(
                p.name == COMMUNITY and str(getattr(p.location, "value", p.location)) == "path"
                for p in operation.iter_parameters()
            )
            shapes: list[str | None] = [values.community()] if has_community else [None]
            if has_community and community_a is not None:
                shapes.append(community_a)
            # The caller's valid bodies first (with a generated case's parameters), then
            # schemathesis' own cases.
            # The caller's bodies go out once with each of B's values (every id of a
            # kind, not only the first: one of them may be in a state the route accepts).
            todo: list[tuple[int, Any, Any, bool]] = [
                (i, cases[i % len(cases)], body, True)
                for body in bodies.get(f"{service} {label}", ())
                for i in range(values.longest())
                if cases
            ]
            todo += [(i, case, case.body, False) for i, case in enumerate(cases)]
            sent_any = False
            for i, case, body, template in todo:
                for community in shapes:
                    attempt = operation.Case(
                        path_parameters=dict(case.path_parameters or {}),
                        headers=dict(case.headers or {}),
                        query=dict(case.query or {}),
                        body=copy.deepcopy(body) if isinstance(body, dict | list) else body,
                        media_type=case.media_type or ("application/json" if template else None),
                    )
                    placed = place(attempt, fields, values, i, community, present_only=template)
                    if not placed:
                        continue  # names nothing of B's: not an attack
                    kwargs = attempt.as_transport_kwargs(base_url=base)
                    sent = _describe(case, kwargs, placed, template)
                    allowed = inert.get(f"{service} {label}", frozenset())
                    harmless = bool(placed) and set(placed) <= set(allowed)
                    for role, tokens in roles.items():
                        token = tokens.get(service)
                        if token is None:
                            continue
                        status, leaked = await _send(client, kwargs, token, canaries)
                        run.record(service, role, label, sent, status, leaked, harmless)
                        sent_any = True
            if not sent_any:
                skipped.append(label)


async def attack(
    bases: Mapping[str, str],
    tokens_a: Tokens,
    ids_b: Mapping[str, Sequence[str]],
    *,
    examples: int = 5,
    community_a: str | None = None,
    canaries_b: Sequence[str] = (),
    bodies: Mapping[str, Sequence[Any]] | None = None,
    only: Collection[str] | None = None,
    inert: Mapping[str, Collection[str]] | None = None,
    seed: int = 10,
    timeout_s: float = 5.0,
) -> dict[str, Any]:
    """Attack every service's API with A's credentials aimed at B's ids.

    `bases`: service name -> base URL (loopback only), each serving /openapi.json.
    `tokens_a`: A's credentials (see `Tokens`); each request of a service is sent once
    per credential that exists in that service.
    `ids_b`: B's values by the name of the parameter or body field that takes them:
    `community` (B's slug), `need_id`, `resident_id`, `plan_id`, `partner_id`,
    `volunteer_id`, `slot_id`, `assignment_id`, `sub_id`, `recipient_id`, `event_id`...
    (`party_id` and a body's `provider` use the volunteer and partner ids).
    `community_a`: A's slug, for the second shape (A's path, B's ids); None skips it.
    `canaries_b`: strings only B's data holds (a resident's name): any answer, whatever its
    status, that contains one counts in `leaks`.

    Returns {"requests", "two_xx", "inert_two_xx", "server_errors", "errors", "leaks", "seconds",
    "by_service": {name: {... , "by_status", "skipped"}}, "by_role", "by_operation",
    "violations": [{service, role, method, path, operation, placed, template, status}]
    (<= 20), "inert_samples", "leak_samples"}. `two_xx` and `leaks` must be 0.
    """
    for base in bases.values():
        _check_loopback(base)
    roles = _tokens_by_role(tokens_a, bases)
    values = Values(ids_b)
    run = Run()
    started = time.monotonic()
    await asyncio.gather(
        *(
            _attack_service(
                service,
                base.rstrip("/"),
                roles,
                values,
                community_a,
                examples,
                seed,
                canaries_b,
                timeout_s,
                bodies or {},
                only,
                INERT_REFERENCES if inert is None else inert,
                run,
            )
            for service, base in bases.items()
        )
    )
    return run.result(time.monotonic() - started)
