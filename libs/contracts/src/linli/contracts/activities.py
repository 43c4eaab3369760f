"""Events of group activities (义诊, 公益市集): an activity with stalls run by partners,
each stall with sessions of limited places; residents' sign-ups and their attendance
(ADR 0046).

Intake owns activities and sign-ups, next to the residents and their priority groups
that decide who gets a place when places are short. Events carry ids, times and counts:
an activity's title and venue, and a stall's offering, are free text typed by an
operator and stay in intake (ADR 0031); `resident_id` is intake's internal id, as
`need.submitted` carries it.
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from pydantic import AwareDatetime, Field

from linli.contracts.types import EventData, PriorityGroup

__all__ = [
    "ActivityCancelled",
    "ActivityHeld",
    "ActivityPublished",
    "ActivityRevised",
    "ActivitySession",
    "ActivityStall",
    "AttendanceRecorded",
    "SignupCancelReason",
    "SignupCancelled",
    "SignupConfirmed",
    "SignupRequested",
    "SignupWaitlisted",
]


class ActivityStall(EventData):
    """A stall of an activity, by id: the partner that runs it."""

    stall_id: UUID = Field(description="Id of the stall (owned by intake).")
    partner_id: UUID = Field(description="Partner organisation running the stall.")


class ActivitySession(EventData):
    """A session of a stall: a time window with a number of places."""

    session_id: UUID = Field(description="Id of the session (owned by intake).")
    stall_id: UUID = Field(description="Stall the session belongs to.")
    starts_at: AwareDatetime = Field(description="When the session starts.")
    ends_at: AwareDatetime = Field(description="When the session ends.")
    places: int = Field(ge=1, le=10_000, description="How many residents it can serve.")


class _ActivityShape(EventData):
    activity_id: UUID = Field(description="Id of the activity (owned by intake).")
    starts_at: AwareDatetime = Field(description="When the activity starts.")
    ends_at: AwareDatetime = Field(description="When the activity ends.")
    registration_closes_at: AwareDatetime = Field(
        description="When sign-ups stop being collected and places are allocated by "
        "priority group, then sign-up time (ADR 0046)."
    )
    stalls: list[ActivityStall] = Field(
        max_length=200, description="The stalls still on offer, by id and partner."
    )
    sessions: list[ActivitySession] = Field(
        max_length=2000, description="The sessions still on offer, with their places."
    )


class ActivityPublished(_ActivityShape):
    """An activity was published: residents may sign up for its sessions."""

    published_at: AwareDatetime = Field(description="When it was published.")


class ActivityRevised(_ActivityShape):
    """A published activity changed: its times, a stall or a session (added, edited,
    cancelled). The event carries the whole activity as it now stands."""

    revised_at: AwareDatetime = Field(description="When it changed.")


class ActivityCancelled(EventData):
    """An activity was cancelled; every sign-up still standing was cancelled with it."""

    activity_id: UUID = Field(description="Id of the cancelled activity.")
    signups_cancelled: int = Field(
        ge=0, description="How many standing sign-ups the cancellation ended."
    )
    cancelled_at: AwareDatetime = Field(description="When it was cancelled.")


class ActivityHeld(EventData):
    """An operator marked an activity held (it took place); counts only."""

    activity_id: UUID = Field(description="Id of the activity.")
    sessions: int = Field(ge=0, description="Sessions that took place.")
    confirmed: int = Field(ge=0, description="Sign-ups holding a place when it was held.")
    attended: int = Field(ge=0, description="Sign-ups recorded as attended so far.")
    held_at: AwareDatetime = Field(description="When it was marked held.")


class _SignupShape(EventData):
    signup_id: UUID = Field(description="Id of the sign-up (owned by intake).")
    activity_id: UUID = Field(description="Activity signed up for.")
    session_id: UUID = Field(description="Session signed up for.")
    resident_id: UUID = Field(description="Resident signed up (intake's internal id).")


class SignupRequested(_SignupShape):
    """A resident was signed up while registration is open; the place is decided when it
    closes (ADR 0046)."""

    priority_group: PriorityGroup = Field(
        description="Resident's priority group when signing up: it goes first for places."
    )
    signed_up_at: AwareDatetime = Field(description="When the sign-up was made.")


class SignupConfirmed(_SignupShape):
    """A sign-up holds a place in its session."""

    promoted: bool = Field(
        description="True when the place came from the waiting list after registration "
        "closed (a cancellation or more places); false at allocation."
    )
    confirmed_at: AwareDatetime = Field(description="When the place was given.")


class SignupWaitlisted(_SignupShape):
    """A sign-up did not get a place and waits for one, in the order of the rule."""

    position: int = Field(ge=1, description="Place in the session's waiting list.")
    waitlisted_at: AwareDatetime = Field(description="When it was put on the waiting list.")


class SignupCancelReason(StrEnum):
    """Why a sign-up ended before the activity."""

    WITHDRAWN = "withdrawn"
    """The resident (through an operator or grid worker) withdrew."""
    SESSION_CANCELLED = "session_cancelled"
    ACTIVITY_CANCELLED = "activity_cancelled"


class SignupCancelled(_SignupShape):
    """A sign-up was cancelled; a place it held goes to the waiting list's first."""

    held_place: bool = Field(description="Whether it held a place when cancelled.")
    reason: SignupCancelReason = Field(description="Why it was cancelled.")
    cancelled_at: AwareDatetime = Field(description="When it was cancelled.")


class AttendanceRecorded(EventData):
    """Attendance of a confirmed sign-up, recorded (or corrected) by an operator or the
    stall's partner. The latest record by `recorded_at` stands."""

    signup_id: UUID = Field(description="Sign-up the record is for.")
    activity_id: UUID = Field(description="Activity.")
    stall_id: UUID = Field(description="Stall of the session.")
    session_id: UUID = Field(description="Session.")
    partner_id: UUID = Field(description="Partner running the stall: whose contribution.")
    session_starts_at: AwareDatetime = Field(
        description="When the session started: the month it counts in."
    )
    attended: bool = Field(description="True: attended; false: no-show.")
    recorded_at: AwareDatetime = Field(description="When the record was made.")
