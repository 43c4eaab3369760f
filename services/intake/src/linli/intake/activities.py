"""Group activities (义诊, 公益市集) and residents' sign-ups: intake's use cases (ADR 0046).

Each use case runs in one transaction: the change and the events it causes commit
together. Places go by the rule of ADR 0046: sign-ups are collected while registration is
open; when it closes, places go to priority groups first, then by sign-up time, and the
rest wait; a freed place goes to the waiting list's first by the same order.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from linli.contracts.activities import (
    ActivityCancelled,
    ActivityHeld,
    ActivityPublished,
    ActivityRevised,
    ActivitySession,
    ActivityStall,
    AttendanceRecorded,
    SignupCancelled,
    SignupCancelReason,
    SignupConfirmed,
    SignupRequested,
    SignupWaitlisted,
)
from linli.contracts.envelope import CloudEvent, new_event
from linli.contracts.types import PriorityGroup, Reason
from linli.servicekit import outbox
from linli.servicekit.db import Conn
from linli.servicekit.idempotency import Idempotency, check_replay

from . import store
from .service import SOURCE, Actor, Conflict, NotFound, Rejected


def local(on: date, at: time, zone: str) -> datetime:
    return datetime.combine(on, at, tzinfo=ZoneInfo(zone))


def _event(data: Any, community: str, subject: uuid.UUID) -> CloudEvent[Any]:
    return new_event(data, community=community, source=SOURCE, subject=str(subject))


def _reject(field: str, message: str, code: str) -> Rejected:
    return Rejected([Reason(field=field, message=message, code=code)])


def session_values(activity: Any, stall_id: uuid.UUID, spec: Any, field: str) -> dict[str, Any]:
    """A session's row from its spec; 422 when it falls outside the activity's hours."""
    if spec.start_time < activity["start_time"] or spec.end_time > activity["end_time"]:
        raise _reject(field, "a session must lie within the activity's hours", "out_of_hours")
    zone = activity["timezone"]
    return {
        "id": uuid.uuid4(),
        "activity_id": activity["id"],
        "stall_id": stall_id,
        "community": activity["community"],
        "start_time": spec.start_time,
        "end_time": spec.end_time,
        "starts_at": local(activity["on_date"], spec.start_time, zone),
        "ends_at": local(activity["on_date"], spec.end_time, zone),
        "places": spec.places,
    }


async def create_activity(
    conn: Conn,
    community: str,
    spec: Any,
    actor: Actor,
    now: datetime,
    idempotency: Idempotency | None = None,
) -> tuple[uuid.UUID, bool]:
    """A draft activity with its stalls and their sessions: (its id, created). A retry
    with the same Idempotency-Key answers the activity created the first time."""
    if not await store.community_exists(conn, community):
        raise NotFound("community")
    starts_at = local(spec.date, spec.start_time, spec.timezone)
    ends_at = local(spec.date, spec.end_time, spec.timezone)
    closes = spec.registration_closes_at or starts_at
    if closes > starts_at:
        raise _reject(
            "body.registration_closes_at",
            "registration must close no later than the activity starts",
            "after_start",
        )
    activity_id = uuid.uuid4()
    async with conn.transaction():
        if idempotency is not None:
            earlier = await store.claim_activity_key(
                conn,
                community,
                idempotency.credential_id,
                idempotency.key,
                idempotency.fingerprint,
                activity_id,
            )
            if earlier is not None:
                check_replay(idempotency, earlier["request_sha256"])
                return earlier["activity_id"], False
        activity = await store.insert_activity(
            conn,
            {
                "id": activity_id,
                "community": community,
                "title": spec.title,
                "venue": spec.venue,
                "on_date": spec.date,
                "start_time": spec.start_time,
                "end_time": spec.end_time,
                "timezone": spec.timezone,
                "starts_at": starts_at,
                "ends_at": ends_at,
                "registration_closes_at": closes,
                "created_by": actor.label(),
            },
        )
        for i, stall in enumerate(spec.stalls):
            await _add_stall(conn, activity, stall, f"body.stalls.{i}")
    return activity_id, True


async def _add_stall(conn: Conn, activity: Any, stall: Any, field: str) -> uuid.UUID:
    stall_id = uuid.uuid4()
    await store.insert_stall(
        conn, stall_id, activity["id"], activity["community"], stall.partner_id, stall.offering
    )
    for j, session in enumerate(stall.sessions):
        await store.insert_session(
            conn, session_values(activity, stall_id, session, f"{field}.sessions.{j}")
        )
    return stall_id


async def _locked(conn: Conn, community: str, activity_id: uuid.UUID, lock: str) -> Any:
    row = await store.get_activity(conn, community, activity_id, lock=lock)
    if row is None:
        raise NotFound("activity")
    return row


def _editable(activity: Any) -> None:
    if activity["status"] not in ("draft", "published"):
        raise Conflict(f"a {activity['status']} activity cannot be changed")


async def _announce(conn: Conn, activity: Any, now: datetime, *, published: bool) -> None:
    """activity.published (or .revised): the whole activity as it now stands."""
    stalls = [s for s in await store.stalls_of(conn, activity["id"]) if s["cancelled_at"] is None]
    sessions = [
        s for s in await store.sessions_of(conn, activity["id"]) if s["cancelled_at"] is None
    ]
    shape: dict[str, Any] = {
        "activity_id": activity["id"],
        "starts_at": activity["starts_at"],
        "ends_at": activity["ends_at"],
        "registration_closes_at": activity["registration_closes_at"],
        "stalls": [ActivityStall(stall_id=s["id"], partner_id=s["partner_id"]) for s in stalls],
        "sessions": [
            ActivitySession(
                session_id=s["id"],
                stall_id=s["stall_id"],
                starts_at=s["starts_at"],
                ends_at=s["ends_at"],
                places=s["places"],
            )
            for s in sessions
        ],
    }
    data: Any = (
        ActivityPublished(**shape, published_at=now)
        if published
        else ActivityRevised(**shape, revised_at=now)
    )
    await outbox.enqueue(conn, _event(data, activity["community"], activity["id"]))


async def _revised(conn: Conn, activity: Any, now: datetime) -> None:
    if activity["status"] == "published":
        await _announce(conn, activity, now, published=False)


async def edit_activity(
    conn: Conn,
    community: str,
    activity_id: uuid.UUID,
    title: str | None,
    venue: str | None,
    now: datetime,
) -> None:
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "update")
        _editable(activity)
        values = dict(activity)
        values["title"] = title if title is not None else activity["title"]
        values["venue"] = venue if venue is not None else activity["venue"]
        activity = await store.update_activity(conn, activity_id, values, now)
        await _revised(conn, activity, now)


async def add_stall(
    conn: Conn, community: str, activity_id: uuid.UUID, stall: Any, now: datetime
) -> uuid.UUID:
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "update")
        _editable(activity)
        stall_id = await _add_stall(conn, activity, stall, "body")
        await _revised(conn, activity, now)
    return stall_id


async def add_session(
    conn: Conn,
    community: str,
    activity_id: uuid.UUID,
    stall_id: uuid.UUID,
    spec: Any,
    now: datetime,
) -> uuid.UUID:
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "update")
        stall = await store.get_stall(conn, activity_id, stall_id)
        if stall is None:
            raise NotFound("stall")
        _editable(activity)
        if stall["cancelled_at"] is not None:
            raise Conflict("the stall is cancelled")
        values = session_values(activity, stall_id, spec, "body")
        await store.insert_session(conn, values)
        await _revised(conn, activity, now)
    return uuid.UUID(str(values["id"]))


async def edit_session(
    conn: Conn,
    community: str,
    activity_id: uuid.UUID,
    session_id: uuid.UUID,
    spec: Any,
    now: datetime,
) -> None:
    """New times or places. Fewer places than sign-ups holding one is 409; more places
    go to the waiting list at once."""
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "update")
        session = await store.get_session(conn, activity_id, session_id, lock=True)
        if session is None:
            raise NotFound("session")
        _editable(activity)
        if session["cancelled_at"] is not None:
            raise Conflict("the session is cancelled")
        if spec.places < session["confirmed"]:
            raise Conflict(f"{session['confirmed']} sign-ups hold a place; places cannot be fewer")
        values = session_values(activity, session["stall_id"], spec, "body")
        await store.update_session(conn, session_id, values)
        if activity["allocated_at"] is not None:
            await _confirm(conn, await store.fill_from_waitlist(conn, session_id, now), now, True)
        await _revised(conn, activity, now)


async def cancel_session(
    conn: Conn, community: str, activity_id: uuid.UUID, session_id: uuid.UUID, now: datetime
) -> None:
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "update")
        session = await store.get_session(conn, activity_id, session_id, lock=True)
        if session is None:
            raise NotFound("session")
        _editable(activity)
        if session["cancelled_at"] is not None:
            return
        await _cancel_session(conn, activity, session_id, SignupCancelReason.SESSION_CANCELLED, now)
        await _revised(conn, activity, now)


async def _cancel_session(
    conn: Conn, activity: Any, session_id: uuid.UUID, reason: SignupCancelReason, now: datetime
) -> int:
    cancelled = await store.cancel_signups_of_session(conn, session_id, reason.value, now)
    await store.cancel_session(conn, session_id, now)
    await outbox.enqueue_many(
        conn,
        [
            _event(
                SignupCancelled(
                    signup_id=r["id"],
                    activity_id=r["activity_id"],
                    session_id=r["session_id"],
                    resident_id=r["resident_id"],
                    held_place=r["was"] == "confirmed",
                    reason=reason,
                    cancelled_at=now,
                ),
                activity["community"],
                r["id"],
            )
            for r in cancelled
        ],
    )
    return len(cancelled)


async def cancel_stall(
    conn: Conn, community: str, activity_id: uuid.UUID, stall_id: uuid.UUID, now: datetime
) -> None:
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "update")
        stall = await store.get_stall(conn, activity_id, stall_id)
        if stall is None:
            raise NotFound("stall")
        _editable(activity)
        if stall["cancelled_at"] is not None:
            return
        for session in await store.sessions_of(conn, activity_id, lock=True):
            if session["stall_id"] == stall_id and session["cancelled_at"] is None:
                await _cancel_session(
                    conn, activity, session["id"], SignupCancelReason.SESSION_CANCELLED, now
                )
        await store.cancel_stall(conn, stall_id, now)
        await _revised(conn, activity, now)


async def publish(conn: Conn, community: str, activity_id: uuid.UUID, now: datetime) -> None:
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "update")
        if activity["status"] == "published":
            return
        if activity["status"] != "draft":
            raise Conflict(f"a {activity['status']} activity cannot be published")
        sessions = await store.sessions_of(conn, activity_id)
        if not any(s["cancelled_at"] is None for s in sessions):
            raise Conflict("an activity without sessions cannot be published")
        activity = await store.set_activity_status(conn, activity_id, "published", now)
        await _announce(conn, activity, now, published=True)


async def cancel(conn: Conn, community: str, activity_id: uuid.UUID, now: datetime) -> None:
    """Cancel the activity and every standing sign-up with it."""
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "update")
        if activity["status"] == "cancelled":
            return
        _editable(activity)
        count = 0
        for session in await store.sessions_of(conn, activity_id, lock=True):
            if session["cancelled_at"] is None:
                count += await _cancel_session(
                    conn, activity, session["id"], SignupCancelReason.ACTIVITY_CANCELLED, now
                )
        was = activity["status"]
        await store.set_activity_status(conn, activity_id, "cancelled", now)
        if was == "published":
            data = ActivityCancelled(
                activity_id=activity_id, signups_cancelled=count, cancelled_at=now
            )
            await outbox.enqueue(conn, _event(data, community, activity_id))


async def _confirm(conn: Conn, rows: list[asyncpg.Record], now: datetime, promoted: bool) -> None:
    await outbox.enqueue_many(
        conn,
        [
            _event(
                SignupConfirmed(
                    signup_id=r["id"],
                    activity_id=r["activity_id"],
                    session_id=r["session_id"],
                    resident_id=r["resident_id"],
                    promoted=promoted,
                    confirmed_at=now,
                ),
                r["community"],
                r["id"],
            )
            for r in rows
        ],
    )


async def allocate(conn: Conn, community: str, activity_id: uuid.UUID, now: datetime) -> bool:
    """Close registration and give places by the rule; once (False when already done).

    The activity's row lock makes a second replica (or the loop and an operator at the
    same time) find it allocated and do nothing."""
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "update")
        if activity["allocated_at"] is not None:
            return False
        if activity["status"] != "published":
            raise Conflict(f"a {activity['status']} activity has no registration to close")
        await store.sessions_of(conn, activity_id, lock=True)
        waiting = await store.waitlist_requested(conn, activity_id, now)
        confirmed: set[uuid.UUID] = set()
        for session_id in sorted({r["session_id"] for r in waiting}):
            rows = await store.fill_from_waitlist(conn, session_id, now)
            confirmed |= {r["id"] for r in rows}
            await _confirm(conn, rows, now, False)
            positions = await store.waitlist_positions(conn, session_id)
            await outbox.enqueue_many(
                conn,
                [
                    _event(
                        SignupWaitlisted(
                            signup_id=r["id"],
                            activity_id=activity_id,
                            session_id=session_id,
                            resident_id=r["resident_id"],
                            position=positions[r["id"]],
                            waitlisted_at=now,
                        ),
                        community,
                        r["id"],
                    )
                    for r in sorted(waiting, key=lambda r: positions.get(r["id"], 0))
                    if r["session_id"] == session_id and r["id"] in positions
                ],
            )
        await store.mark_allocated(conn, activity_id, now)
    return True


async def allocate_due(conn: Conn, now: datetime) -> int:
    """The loop's tick: allocate every activity whose registration has closed."""
    done = 0
    for row in await store.activities_to_allocate(conn, now):
        try:
            done += await allocate(conn, row["community"], row["id"], now)
        except Conflict:
            continue  # cancelled in between
    return done


async def hold(conn: Conn, community: str, activity_id: uuid.UUID, now: datetime) -> None:
    """Mark a published activity held, once it has started."""
    activity = await store.get_activity(conn, community, activity_id)
    if activity is None:
        raise NotFound("activity")
    if activity["status"] == "published" and activity["allocated_at"] is None:
        await allocate(conn, community, activity_id, now)
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "update")
        if activity["status"] == "held":
            return
        if activity["status"] != "published":
            raise Conflict(f"a {activity['status']} activity cannot be held")
        if now < activity["starts_at"]:
            raise Conflict("the activity has not started yet")
        counts = await store.activity_counts(conn, activity_id)
        await store.set_activity_status(conn, activity_id, "held", now)
        data = ActivityHeld(
            activity_id=activity_id,
            sessions=counts["sessions"],
            confirmed=counts["confirmed"],
            attended=counts["attended"],
            held_at=now,
        )
        await outbox.enqueue(conn, _event(data, community, activity_id))


async def sign_up(
    conn: Conn,
    community: str,
    activity_id: uuid.UUID,
    session_id: uuid.UUID,
    resident_id: uuid.UUID,
    actor: Actor,
    now: datetime,
) -> tuple[asyncpg.Record, bool]:
    """Sign a resident up for a session: (the sign-up, created). Twice is one sign-up."""
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "share")
        session = await store.get_session(conn, activity_id, session_id, lock=True)
        if session is None:
            # An id in the path that names nothing here is 404, like every other path id.
            raise NotFound("session")
        resident = await store.get_resident(conn, community, resident_id)
        if resident is None:
            raise _reject("body.resident_id", "no such resident", "unknown_resident")
        existing = await store.standing_signup(conn, session_id, resident_id)
        if existing is not None:
            return existing, False
        if activity["status"] != "published":
            raise Conflict(f"a {activity['status']} activity takes no sign-ups")
        if session["cancelled_at"] is not None:
            raise Conflict("the session is cancelled")
        if now >= session["ends_at"]:
            raise Conflict("the session is over")
        open_ = activity["allocated_at"] is None
        row = await store.insert_signup(
            conn,
            {
                "id": uuid.uuid4(),
                "community": community,
                "activity_id": activity_id,
                "session_id": session_id,
                "resident_id": resident_id,
                "priority_group": resident["priority_group"],
                "status": "requested" if open_ else "waitlisted",
                "signed_up_at": now,
                "signed_up_by": actor.label(),
                "decided_at": None if open_ else now,
            },
        )
        assert row is not None  # the session lock serialises sign-ups of one resident
        if open_:
            data: Any = SignupRequested(
                signup_id=row["id"],
                activity_id=activity_id,
                session_id=session_id,
                resident_id=resident_id,
                priority_group=PriorityGroup(row["priority_group"]),
                signed_up_at=now,
            )
            await outbox.enqueue(conn, _event(data, community, row["id"]))
        else:
            promoted = await store.fill_from_waitlist(conn, session_id, now)
            await _confirm(conn, promoted, now, True)
            if row["id"] not in {r["id"] for r in promoted}:
                positions = await store.waitlist_positions(conn, session_id)
                data = SignupWaitlisted(
                    signup_id=row["id"],
                    activity_id=activity_id,
                    session_id=session_id,
                    resident_id=resident_id,
                    position=positions[row["id"]],
                    waitlisted_at=now,
                )
                await outbox.enqueue(conn, _event(data, community, row["id"]))
        fresh = await store.get_signup(conn, activity_id, row["id"])
    assert fresh is not None
    return fresh, True


async def cancel_signup(
    conn: Conn, community: str, activity_id: uuid.UUID, signup_id: uuid.UUID, now: datetime
) -> asyncpg.Record:
    """Withdraw a sign-up; a place it held goes to the waiting list's first."""
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "share")
        signup = await store.get_signup(conn, activity_id, signup_id)
        if signup is None:
            raise NotFound("sign-up")
        await store.get_session(conn, activity_id, signup["session_id"], lock=True)
        was = await store.cancel_signup(conn, signup_id, SignupCancelReason.WITHDRAWN.value, now)
        if was is not None:
            data = SignupCancelled(
                signup_id=signup_id,
                activity_id=activity_id,
                session_id=signup["session_id"],
                resident_id=signup["resident_id"],
                held_place=was == "confirmed",
                reason=SignupCancelReason.WITHDRAWN,
                cancelled_at=now,
            )
            await outbox.enqueue(conn, _event(data, community, signup_id))
            if was == "confirmed" and activity["allocated_at"] is not None:
                rows = await store.fill_from_waitlist(conn, signup["session_id"], now)
                await _confirm(conn, rows, now, True)
        fresh = await store.get_signup(conn, activity_id, signup_id)
    assert fresh is not None
    return fresh


async def record_attendance(
    conn: Conn,
    community: str,
    activity_id: uuid.UUID,
    signup_id: uuid.UUID,
    attended: bool,
    actor: Actor,
    partner_id: uuid.UUID | None,
    now: datetime,
) -> asyncpg.Record:
    """Attended or no-show, for a sign-up holding a place. `partner_id`: the caller is a
    partner, who records only at its own stalls (another stall's sign-up is 404)."""
    async with conn.transaction():
        activity = await _locked(conn, community, activity_id, "share")
        signup = await store.get_signup(conn, activity_id, signup_id)
        if signup is None:
            raise NotFound("sign-up")
        session = await store.get_session(conn, activity_id, signup["session_id"], lock=True)
        assert session is not None
        stall = await store.get_stall(conn, activity_id, session["stall_id"])
        assert stall is not None
        if partner_id is not None and stall["partner_id"] != partner_id:
            raise NotFound("sign-up")
        if activity["status"] not in ("published", "held"):
            raise Conflict(f"a {activity['status']} activity records no attendance")
        if not await store.record_attendance(conn, signup_id, attended, actor.label(), now):
            raise Conflict("only a sign-up holding a place has attendance")
        data = AttendanceRecorded(
            signup_id=signup_id,
            activity_id=activity_id,
            stall_id=stall["id"],
            session_id=session["id"],
            partner_id=stall["partner_id"],
            session_starts_at=session["starts_at"],
            attended=attended,
            recorded_at=now,
        )
        await outbox.enqueue(conn, _event(data, community, signup_id))
        fresh = await store.get_signup(conn, activity_id, signup_id)
    assert fresh is not None
    return fresh
