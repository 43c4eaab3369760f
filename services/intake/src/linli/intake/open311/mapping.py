"""Open311 GeoReport v2 <-> Linli, as plain functions (no I/O), ADR 0050.

* services and service definitions come from the catalogue (ADR 0045): a kind is a
  `service_code`, its details model's JSON Schema gives the attributes;
* a submission (`service_code`, `attribute[code]=value`, `description`) becomes the same
  `NeedSpec` the native `POST /v1/communities/{c}/needs` validates;
* a need becomes a GeoReport `request`: `open`/`closed`, `status_notes` from its
  timeline, `expected_datetime` from the kind's SLA; never the resident, never free text;
* documents render as JSON or XML, errors as `[{"code", "description"}]` / `<errors>`.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from xml.etree import ElementTree

from pydantic import ValidationError

from linli.contracts.binding import reasons_from_validation_error
from linli.contracts.catalogue import CATALOGUE, KindSpec, SlaBasis
from linli.contracts.needs import NeedSpecAdapter, NeedSpecBase
from linli.contracts.types import COMMUNITY_SLUG_PATTERN, PriorityGroup, Reason, Urgency
from linli.servicekit.csvimport import EXTERNAL_REF_PATTERN

JSON_TYPE = "application/json"
XML_TYPE = "text/xml; charset=utf-8"

SOURCE_SYSTEM = "open311"
"""`source.system` of a need created through the facade."""

DEFAULT_WINDOW = timedelta(hours=24)
"""A window kind's window when the request names none: from now, for a day."""

MAX_LIST = 1000
"""At most this many requests in one `GET /requests` answer (the specification's limit)."""

DEFAULT_SPAN = timedelta(days=90)
"""`GET /requests` without dates covers the last 90 days (or 90 days from `start_date`,
or up to `end_date`)."""

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
"""Filters are clamped to the years needs can have (`TimeWindow`), so no date overflows."""

MAX_IDS = 100
"""At most this many ids in one `service_request_id` filter."""

OPEN_STATUSES = ("submitted", "scheduled", "offered", "assigned", "escalated")
CLOSED_STATUSES = ("fulfilled", "failed", "cancelled")

STATUS_NOTES = {
    "submitted": "Received by the community; waiting to be scheduled.",
    "scheduled": "Scheduled: capacity is reserved for it.",
    "offered": "Offered to a helper; waiting for an answer.",
    "assigned": "A helper has accepted it.",
    "fulfilled": "Done: the service was delivered.",
    "failed": "The service could not be delivered.",
    "escalated": "Escalated to the community's staff, who are on it.",
    "cancelled": "Cancelled.",
}
"""`status_notes` by the status of the need's latest timeline entry: fixed sentences, never
a timeline note (notes may be free text, ADR 0031)."""

GROUPS = {SlaBasis.WINDOW: "scheduled_services", SlaBasis.RESPONSE: "response_calls"}

# --- attributes: Linli's own, then the kind's details ---------------------------------

RESIDENT_ID = "resident_id"
RESIDENT_REF = "resident_ref"
URGENCY = "urgency"
WINDOW_EARLIEST = "window_earliest"
WINDOW_LATEST = "window_latest"

FREE_TEXT_DETAIL = "description"
"""A details field carried by the standard `description` parameter, not an attribute."""

_COMMON_ATTRIBUTES: tuple[dict[str, Any], ...] = (
    {
        "variable": True,
        "code": RESIDENT_ID,
        "datatype": "string",
        "required": False,
        "datatype_description": "A UUID. Give this or resident_ref, not both.",
        "description": "The resident's Linli id. Residents are registered with the "
        "community beforehand; a request never creates one.",
    },
    {
        "variable": True,
        "code": RESIDENT_REF,
        "datatype": "string",
        "required": False,
        "datatype_description": "Letters, digits and ._:/- (at most 64). Give this or "
        "resident_id, not both.",
        "description": "The resident's id in the community's own records (the "
        "external_ref of the residents' CSV import).",
    },
    {
        "variable": True,
        "code": URGENCY,
        "datatype": "singlevaluelist",
        "required": False,
        "datatype_description": "One of the keys; routine when left out.",
        "description": "How urgent it is; it selects the SLA clock.",
        "values": [{"key": u.value, "name": u.value} for u in Urgency],
    },
    {
        "variable": True,
        "code": WINDOW_EARLIEST,
        "datatype": "datetime",
        "required": False,
        "datatype_description": "RFC 3339 with an offset, e.g. 2026-12-01T11:00:00+08:00. "
        "Now when left out.",
        "description": "Start of the window in which the service should happen.",
    },
    {
        "variable": True,
        "code": WINDOW_LATEST,
        "datatype": "datetime",
        "required": False,
        "datatype_description": "RFC 3339 with an offset, after window_earliest, at most 31 "
        "days later. Left out: a day after the start, or the response time of the "
        "kind's SLA for the urgency.",
        "description": "End of the window in which the service should happen.",
    },
)


def _resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    """A property's schema with its `$ref` and `anyOf: [X, null]` resolved."""
    out = dict(node)
    if "$ref" in out:
        name = str(out.pop("$ref")).rsplit("/", 1)[-1]
        out = {**schema.get("$defs", {}).get(name, {}), **out}
    if "anyOf" in out:
        branches = [b for b in out.pop("anyOf") if b.get("type") != "null"]
        if len(branches) == 1:
            out = {**_resolve(schema, branches[0]), **out}
    return out


def _values(keys: Iterable[Any]) -> list[dict[str, str]]:
    return [{"key": str(v), "name": str(v).replace("_", " ")} for v in keys]


def _bounds(node: Mapping[str, Any]) -> str:
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None and high is not None:
        return f"An integer from {low} to {high}."
    return "An integer."


def _detail_attribute(schema: Mapping[str, Any], name: str, raw: Mapping[str, Any]) -> dict:
    node = _resolve(schema, raw)
    required = name in schema.get("required", [])
    default = node.get("default")
    suffix = "" if required or default is None else f" {str(default).lower()} when left out."
    attribute: dict[str, Any] = {
        "variable": True,
        "code": name,
        "required": required,
        "description": str(node.get("description") or node.get("title") or name),
    }
    kind = node.get("type")
    if "enum" in node:
        attribute["datatype"] = "singlevaluelist"
        attribute["datatype_description"] = "One of the keys." + suffix
        attribute["values"] = [
            {"key": str(v), "name": str(v).replace("_", " ")} for v in node["enum"]
        ]
    elif kind == "boolean":
        attribute["datatype"] = "singlevaluelist"
        attribute["datatype_description"] = "true or false." + suffix
        attribute["values"] = [{"key": "true", "name": "yes"}, {"key": "false", "name": "no"}]
    elif kind in ("integer", "number"):
        attribute["datatype"] = "number"
        attribute["datatype_description"] = _bounds(node) + suffix
    elif kind == "array":
        items = _resolve(schema, node.get("items", {}))
        most = node.get("maxItems")
        if "enum" in items:
            attribute["datatype"] = "multivaluelist"
            attribute["values"] = _values(items["enum"])
            attribute["datatype_description"] = f"Keys, as attribute[{name}][]=key each."
        else:
            attribute["datatype"] = "string"
            attribute["datatype_description"] = (
                f"One or more values, each as attribute[{name}][]=value"
                + (f" (at most {most}" if most else " (")
                + (
                    f", each at most {items['maxLength']} characters)."
                    if "maxLength" in items
                    else ")."
                )
            )
    else:
        longest = node.get("maxLength")
        attribute["datatype"] = "text" if longest and longest > 200 else "string"
        attribute["datatype_description"] = (
            f"At most {longest} characters." if longest else "Text."
        ) + suffix
    attribute["datatype_description"] = attribute["datatype_description"].strip()
    return attribute


def attributes(entry: KindSpec) -> list[dict[str, Any]]:
    """A kind's attributes: Linli's own (resident, urgency, window), then one per field
    of its details model as submitted, in the model's order (`order` from 1)."""
    return copy.deepcopy(_attributes(entry.kind))


@cache
def _attributes(kind: str) -> list[dict[str, Any]]:
    entry = CATALOGUE[kind]
    schema = entry.request_details.model_json_schema()
    found = [dict(a) for a in _COMMON_ATTRIBUTES]
    for name, raw in schema.get("properties", {}).items():
        if name == FREE_TEXT_DETAIL:
            continue
        found.append(_detail_attribute(schema, name, raw))
    for order, attribute in enumerate(found, start=1):
        attribute["order"] = order
    return found


def free_text_field(entry: KindSpec) -> str:
    """Where the standard `description` goes: the kind's private description (kept by
    intake, ADR 0031), or the need's notes for the operator."""
    if FREE_TEXT_DETAIL in entry.request_details.model_fields:
        return f"details.{FREE_TEXT_DETAIL}"
    return "notes"


def service(entry: KindSpec) -> dict[str, Any]:
    """One `service` of `GET /services`."""
    keywords = [entry.kind, entry.labels["en"], *entry.served_by.partner_kinds]
    return {
        "service_code": entry.kind,
        "service_name": entry.labels["zh-CN"],
        "description": f"{entry.labels['en']}: {entry.description}",
        "metadata": True,
        "type": "realtime",
        "keywords": ", ".join(dict.fromkeys(keywords)),
        "group": GROUPS[entry.sla.basis],
    }


def services() -> list[dict[str, Any]]:
    return [service(entry) for entry in CATALOGUE.values()]


def service_definition(entry: KindSpec) -> dict[str, Any]:
    return {"service_code": entry.kind, "attributes": attributes(entry)}


# --- a submission -----------------------------------------------------------------------

_BASE_FIELDS: dict[str, dict[str, Any]] = {
    "jurisdiction_id": {"type": "string", "pattern": COMMUNITY_SLUG_PATTERN, "maxLength": 64},
    "api_key": {"type": "string", "maxLength": 200},
    "lat": {"type": "number", "minimum": -90, "maximum": 90},
    "long": {"type": "number", "minimum": -180, "maximum": 180},
    "address_string": {"type": "string", "maxLength": 500},
    "address_id": {"type": "string", "maxLength": 500},
    "media_url": {"type": "string", "maxLength": 500},
    **{
        name: {"type": "string", "maxLength": 0, "description": "Refused unless empty."}
        for name in sorted({"email", "first_name", "last_name", "phone", "device_id", "account_id"})
    },
}


def _linli_attributes() -> dict[str, dict[str, Any]]:
    moment = {"type": "string", "format": "date-time"}
    return {
        RESIDENT_ID: {"type": "string", "format": "uuid"},
        RESIDENT_REF: {"type": "string", "pattern": EXTERNAL_REF_PATTERN, "maxLength": 64},
        URGENCY: {"type": "string", "enum": [u.value for u in Urgency]},
        WINDOW_EARLIEST: moment,
        WINDOW_LATEST: moment,
    }


def _plain(schema: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    """A details property's schema, resolved and without titles, defaults or nulls."""
    out = _resolve(schema, node)
    if out.get("type") == "array" and "items" in out:
        out["items"] = _plain(schema, out["items"])
    return {k: v for k, v in out.items() if k not in ("title", "default", "description")}


def request_body_schema(form: bool) -> dict[str, Any]:
    """The JSON Schema of `POST /requests` as the facade enforces it: one variant per
    service (discriminated by `service_code`), its attributes typed from the kind's
    details model, exactly one of resident_id and resident_ref. Form-encoded, an attribute
    is a field `attribute[code]` (a list `attribute[code][]`); in JSON, `attribute` is an
    object."""
    variants = []
    for entry in CATALOGUE.values():
        details = entry.request_details.model_json_schema()
        attrs = _linli_attributes()
        required_attrs = []
        for name, raw in details.get("properties", {}).items():
            if name == FREE_TEXT_DETAIL:
                continue
            attrs[name] = _plain(details, raw)
            if name in details.get("required", []):
                required_attrs.append(name)
        text_field = free_text_field(entry)
        if text_field == "notes":
            text = {"type": "string", "maxLength": 1000}
        else:
            text = {
                k: v for k, v in _plain(details, details["properties"][FREE_TEXT_DETAIL]).items()
            }
        text_required = text_field != "notes" and FREE_TEXT_DETAIL in details.get("required", [])
        fixed = {"service_code": {"type": "string", "enum": [entry.kind]}, "description": text}
        required = ["service_code", *(["description"] if text_required else [])]
        if form:
            props = {**fixed, **_BASE_FIELDS}
            for name, prop in attrs.items():
                many = prop.get("type") == "array"
                props[f"attribute[{name}]{'[]' if many else ''}"] = prop
            variant = {
                "type": "object",
                "properties": props,
                "required": required
                + [
                    f"attribute[{n}]{'[]' if attrs[n].get('type') == 'array' else ''}"
                    for n in required_attrs
                ],
                "oneOf": [
                    {"required": [f"attribute[{RESIDENT_ID}]"]},
                    {"required": [f"attribute[{RESIDENT_REF}]"]},
                ],
                "additionalProperties": False,
            }
        else:
            attribute = {
                "type": "object",
                "properties": attrs,
                "required": required_attrs,
                "oneOf": [{"required": [RESIDENT_ID]}, {"required": [RESIDENT_REF]}],
                "additionalProperties": False,
            }
            variant = {
                "type": "object",
                "properties": {**fixed, **_BASE_FIELDS, "attribute": attribute},
                "required": [*required, "attribute"],
                "additionalProperties": False,
            }
        variants.append(variant)
    return {
        "oneOf": variants,
        "description": "GeoReport v2 fields and the service's attributes (ADR 0050).",
    }


LOCATION_FIELDS = frozenset({"lat", "long", "address_string", "address_id", "media_url"})
"""Accepted (bounded) but not kept: the resident's address is in their record, and a street
address typed into a 311 call is personal data intake does not take this way."""

PERSONAL_FIELDS = frozenset(
    {"email", "first_name", "last_name", "phone", "device_id", "account_id"}
)
"""Refused when not empty: a request never creates or changes a resident (ADR 0050)."""

KNOWN_FIELDS = frozenset(
    {"service_code", "jurisdiction_id", "api_key", "description"}
    | LOCATION_FIELDS
    | PERSONAL_FIELDS
)

MAX_FIELDS = 64
MAX_VALUE = 4000


@dataclass
class Submission:
    """A `POST /requests` as sent, before validation."""

    fields: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, list[str] | str | int | float | bool] = field(default_factory=dict)
    reasons: list[Reason] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        value = self.fields.get(name)
        return value if value not in (None, "") else None


def _reason(name: str, message: str, code: str) -> Reason:
    return Reason(field=name, message=message, code=code)


def parse_form(pairs: Sequence[tuple[str, str]]) -> Submission:
    """`application/x-www-form-urlencoded` fields: `attribute[code]=value`, a list as
    `attribute[code][]=v` repeated (or `attribute[code]` repeated)."""
    out = Submission()
    if len(pairs) > MAX_FIELDS:
        out.reasons.append(_reason("body", f"at most {MAX_FIELDS} fields", "too_many_fields"))
        return out
    lists: dict[str, list[str]] = {}
    for name, value in pairs:
        if len(value) > MAX_VALUE:
            out.reasons.append(_reason(name[:80], f"at most {MAX_VALUE} characters", "too_long"))
            continue
        if name.startswith("attribute[") and name.endswith("]"):
            code = name[len("attribute[") : -1]
            many = code.endswith("][")  # attribute[code][]
            code = code.removesuffix("][")
            if not code or "[" in code or "]" in code:
                out.reasons.append(_reason("attribute", "malformed attribute name", "malformed"))
                continue
            values = lists.setdefault(code, [])
            values.append(value)
            # `[]` makes a list even of one value; a repeated name makes a list too.
            out.attributes[code] = values if many or len(values) > 1 else value
            continue
        if name in out.fields:
            out.reasons.append(_reason(name, "given more than once", "duplicate"))
            continue
        out.fields[name] = value
    return out


def parse_json(body: Any) -> Submission:
    """The same fields as a JSON object, `attribute` an object of code -> value."""
    out = Submission()
    if not isinstance(body, dict):
        out.reasons.append(_reason("body", "must be a JSON object", "model_type"))
        return out
    if len(body) > MAX_FIELDS:
        out.reasons.append(_reason("body", f"at most {MAX_FIELDS} fields", "too_many_fields"))
        return out
    for name, value in body.items():
        if name == "attribute":
            if not isinstance(value, dict) or len(value) > MAX_FIELDS:
                out.reasons.append(_reason("attribute", "must be an object", "model_type"))
                continue
            for code, item in value.items():
                if isinstance(item, list) and all(isinstance(v, str) for v in item):
                    out.attributes[str(code)] = [str(v) for v in item]
                elif isinstance(item, str | int | float | bool) and not isinstance(item, dict):
                    out.attributes[str(code)] = item
                else:
                    out.reasons.append(
                        _reason(f"attribute[{code}]", "must be a value or a list", "model_type")
                    )
            continue
        if value is None:
            continue
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            out.reasons.append(_reason(str(name)[:80], "must be a string", "string_type"))
            continue
        out.fields[str(name)] = str(value)
    return out


def check_fields(sub: Submission) -> list[Reason]:
    """Unknown fields, personal data and bounded location fields."""
    reasons: list[Reason] = []
    for name, value in sub.fields.items():
        if name not in KNOWN_FIELDS:
            reasons.append(_reason(name[:80], "not a GeoReport v2 field", "extra_forbidden"))
        elif name in PERSONAL_FIELDS and value:
            reasons.append(
                _reason(
                    name,
                    "personal data is not taken here: the resident is named by "
                    "attribute[resident_id] or attribute[resident_ref]",
                    "personal_data_refused",
                )
            )
    for name, low, high in (("lat", -90.0, 90.0), ("long", -180.0, 180.0)):
        raw = sub.get(name)
        if raw is None:
            continue
        try:
            number = float(raw)
        except ValueError:
            number = float("nan")
        if not low <= number <= high:
            reasons.append(_reason(name, f"a number from {low:g} to {high:g}", "out_of_range"))
    for name in ("address_string", "address_id", "media_url"):
        raw = sub.get(name)
        if raw is not None and len(raw) > 500:
            reasons.append(_reason(name, "at most 500 characters", "too_long"))
    if sub.get("description") is not None and len(sub.fields["description"]) > MAX_VALUE:
        reasons.append(_reason("description", f"at most {MAX_VALUE} characters", "too_long"))
    return reasons


def _parse_time(value: Any, name: str, reasons: list[Reason]) -> datetime | None:
    if not isinstance(value, str):
        reasons.append(_reason(f"attribute[{name}]", "an RFC 3339 date-time", "datetime_type"))
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        reasons.append(_reason(f"attribute[{name}]", "an RFC 3339 date-time", "datetime_parsing"))
        return None
    if moment.tzinfo is None:
        reasons.append(_reason(f"attribute[{name}]", "must carry an offset", "timezone_aware"))
        return None
    return moment


def response_seconds(entry: KindSpec, urgency: Urgency, priority_group: str | None) -> float | None:
    """The catalogue's default response duration for a response kind (ADR 0045); None for
    a window kind. A community's SLA policy in scheduling may override it."""
    response = entry.sla.response
    if entry.sla.basis is not SlaBasis.RESPONSE or response is None:
        return None
    if urgency is Urgency.EMERGENCY:
        return response.emergency_onsite_s
    shortened = entry.sla.priority_groups_shorten and priority_group not in (
        None,
        PriorityGroup.NONE.value,
    )
    if urgency is Urgency.URGENT or shortened:
        return response.priority_s
    return response.routine_s


@dataclass(frozen=True)
class Mapped:
    """A submission as a need: the spec, or the reasons it is not one."""

    spec: NeedSpecBase | None
    reasons: list[Reason]
    resident_ref: str | None = None


def to_need(
    entry: KindSpec, sub: Submission, now: datetime, resident_id: uuid.UUID | None
) -> Mapped:
    """Build the native `NeedSpec` from a submission and validate it with the same model
    as `POST /v1/communities/{c}/needs`. `resident_id`: the resident found for
    `attribute[resident_ref]`, if that was given."""
    reasons = list(sub.reasons) + check_fields(sub)
    attrs = dict(sub.attributes)
    known = {a["code"] for a in _attributes(entry.kind)}
    for code in attrs:
        if code not in known:
            reasons.append(
                _reason(
                    f"attribute[{code[:60]}]", "not an attribute of this service", "extra_forbidden"
                )
            )
    by_id, by_ref = attrs.pop(RESIDENT_ID, None), attrs.pop(RESIDENT_REF, None)
    if (by_id is None) == (by_ref is None):
        reasons.append(
            _reason(
                f"attribute[{RESIDENT_ID}]",
                "give exactly one of attribute[resident_id] and attribute[resident_ref]",
                "missing" if by_id is None else "ambiguous",
            )
        )
    resident: Any = by_id if by_id is not None else resident_id
    if by_ref is not None and by_id is None and resident_id is None:
        reasons.append(
            _reason(f"attribute[{RESIDENT_REF}]", "no such resident", "unknown_resident")
        )
    urgency_raw = attrs.pop(URGENCY, Urgency.ROUTINE.value)
    try:
        urgency = Urgency(str(urgency_raw) if isinstance(urgency_raw, str) else "")
    except ValueError:
        reasons.append(
            _reason(f"attribute[{URGENCY}]", "one of routine, urgent, emergency", "enum")
        )
        urgency = Urgency.ROUTINE
    earliest_raw, latest_raw = attrs.pop(WINDOW_EARLIEST, None), attrs.pop(WINDOW_LATEST, None)
    earliest = _parse_time(earliest_raw, WINDOW_EARLIEST, reasons) if earliest_raw else now
    latest = _parse_time(latest_raw, WINDOW_LATEST, reasons) if latest_raw else None
    if latest is None and earliest is not None:
        seconds = response_seconds(entry, urgency, None)
        latest = earliest + (timedelta(seconds=seconds) if seconds else DEFAULT_WINDOW)
    details: dict[str, Any] = {k: v for k, v in attrs.items() if k in known}
    text = sub.get("description")
    target = free_text_field(entry)
    body: dict[str, Any] = {
        "kind": entry.kind,
        "resident_id": str(resident) if resident is not None else None,
        "urgency": urgency.value,
        "window": {
            "earliest": earliest.isoformat() if earliest else None,
            "latest": latest.isoformat() if latest else None,
        },
        "details": details,
        "source": {"system": SOURCE_SYSTEM},
    }
    if text is not None:
        if target == "notes":
            body["notes"] = text
        else:
            details[FREE_TEXT_DETAIL] = text
    if reasons:
        return Mapped(None, reasons)
    try:
        spec = NeedSpecAdapter.validate_python(body)
    except ValidationError as exc:
        return Mapped(None, [open311_reason(r) for r in reasons_from_validation_error(exc)])
    return Mapped(spec, [])


def open311_field(linli_field: str) -> str:
    """A native field path (`details.portions`, `window.latest`) as the Open311 name the
    caller sent (`attribute[portions]`, `attribute[window_latest]`)."""
    name = linli_field.removeprefix("body.")
    if name in ("notes", f"details.{FREE_TEXT_DETAIL}"):
        return "description"
    if name.startswith("details."):
        code, _, rest = name.removeprefix("details.").partition(".")
        return f"attribute[{code}]" + (f".{rest}" if rest else "")
    if name.startswith("window"):
        part = name.partition(".")[2]
        return (
            f"attribute[window_{part}]"
            if part in ("earliest", "latest")
            else "attribute[window_latest]"
        )
    if name in (RESIDENT_ID, URGENCY):
        return f"attribute[{name}]"
    return name or "body"


def open311_reason(reason: Reason) -> Reason:
    return Reason(field=open311_field(reason.field), message=reason.message, code=reason.code)


# --- a need as a request ----------------------------------------------------------------


def date_range(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The `requested_datetime` range of `GET /requests`: what was given, the last 90 days
    by default (90 days from a lone `start_date`, 90 days up to a lone `end_date`). A range
    of any length is served (at most 1000 requests, newest first); a reversed one matches
    nothing."""
    start = None if start is None else min(max(start, EARLIEST), LATEST)
    end = None if end is None else min(max(end, EARLIEST), LATEST)
    if end is None:
        end = min(start + DEFAULT_SPAN, LATEST) if start is not None else now
    if start is None:
        start = max(end - DEFAULT_SPAN, EARLIEST)
    return start, end


def open_or_closed(status: str) -> str:
    return "closed" if status in CLOSED_STATUSES else "open"


def linli_statuses(wanted: Iterable[str]) -> list[str]:
    found: list[str] = []
    for value in wanted:
        found += OPEN_STATUSES if value == "open" else CLOSED_STATUSES
    return found


def expected_datetime(row: Any) -> datetime | None:
    """When the SLA promises it, computed from the catalogue (ADR 0045) and the need as
    submitted: the window's end for a window kind; submission plus the default response
    duration (urgency, priority group) for a response kind. Scheduling's per-community
    overrides are not known to intake (ADR 0050)."""
    entry = CATALOGUE.get(str(row["kind"]))
    if entry is None:
        return None
    try:
        urgency = Urgency(row["urgency"])
    except ValueError:
        urgency = Urgency.ROUTINE
    seconds = response_seconds(entry, urgency, row["priority_group"])
    if seconds is None:
        return row["window_latest"]
    submitted: datetime = row["submitted_at"]
    return submitted + timedelta(seconds=seconds)


def service_notice(entry: KindSpec, expected: datetime | None) -> str:
    promise = f"Promise: {entry.sla.label}"
    if expected is None:
        return promise + "."
    return f"{promise}, expected by {_iso(expected)}."


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def request_view(row: Any, last_status: str | None, agency: str | None) -> dict[str, Any]:
    """A need as a GeoReport `request`: the course without the contents (no resident, no
    description, no notes), the same for every reader."""
    entry = CATALOGUE.get(str(row["kind"]))
    status = str(row["status"])
    return {
        "service_request_id": str(row["id"]),
        "status": open_or_closed(status),
        "status_notes": STATUS_NOTES.get(last_status or status, STATUS_NOTES.get(status)),
        "service_name": entry.labels["zh-CN"] if entry else str(row["kind"]),
        "service_code": str(row["kind"]),
        "description": None,
        "agency_responsible": agency,
        "service_notice": entry.sla.label if entry else None,
        "requested_datetime": _iso(row["submitted_at"]),
        "updated_datetime": _iso(row["updated_at"]),
        "expected_datetime": _iso(expected_datetime(row)),
        "address": None,
        "address_id": None,
        "zipcode": None,
        "lat": None,
        "long": None,
        "media_url": None,
    }


# --- rendering --------------------------------------------------------------------------

_CHILD = {"attributes": "attribute", "values": "value"}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fill(element: ElementTree.Element, item: Mapping[str, Any]) -> None:
    for key, value in item.items():
        child = ElementTree.SubElement(element, key)
        if isinstance(value, list):
            for sub in value:
                _fill(ElementTree.SubElement(child, _CHILD.get(key, "item")), sub)
        elif value is not None:
            child.text = _text(value)


def xml_document(root: str, item: str | None, content: Any) -> bytes:
    """`<root><item>…</item>…</root>` for a list, `<root>…</root>` for one object."""
    element = ElementTree.Element(root)
    if item is None:
        _fill(element, content)
    else:
        for entry in content:
            _fill(ElementTree.SubElement(element, item), entry)
    body: bytes = ElementTree.tostring(element, encoding="utf-8", xml_declaration=True)
    return body


def refusal_status(reasons: Sequence[Reason]) -> int:
    """404 when the only thing wrong is a resident the jurisdiction does not have (like an
    unknown jurisdiction_id or service_code in the specification), else 400."""
    if reasons and all(r.code == "unknown_resident" for r in reasons):
        return 404
    return 400


def error_list(status: int, reasons: Sequence[Reason] | str) -> list[dict[str, Any]]:
    """Open311 errors: one `{code, description}` per reason, the field named first."""
    if isinstance(reasons, str):
        return [{"code": status, "description": reasons}]
    return [
        {"code": status, "description": f"{r.field}: {r.message} ({r.code})"} for r in reasons
    ] or [{"code": status, "description": "bad request"}]
