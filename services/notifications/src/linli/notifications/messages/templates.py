# ruff: noqa: RUF001 -- Chinese text uses full-width punctuation on purpose.
"""Message templates per event and locale (zh-CN and en): plain `str.format` strings.

A message carries only what its reader needs: a time, a kind of service, a short
reference an operator can look up. Never names, addresses, phone numbers, other
residents' data or free text from reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from linli.contracts.catalogue import CATALOGUE

LOCALES = ("zh-CN", "en")
DEFAULT_LOCALE = "zh-CN"


@dataclass(frozen=True)
class Template:
    subject: str
    body: str


TEMPLATES: dict[str, dict[str, Template]] = {
    # family: a meal reached their relative
    "meal_delivered": {
        "zh-CN": Template("午餐已送达", "午餐已于{time}送达。"),
        "en": Template("Lunch delivered", "Lunch delivered at {time}."),
    },
    "meal_delivered_neighbour": {
        "zh-CN": Template("午餐已送达", "午餐已于{time}送达，由邻居代收。"),
        "en": Template("Lunch delivered", "Lunch delivered at {time}, received by a neighbour."),
    },
    # family: a visit or repair is done
    "need_fulfilled": {
        "zh-CN": Template("{kind}已完成", "{kind}已于{time}完成。"),
        "en": Template("{kind} done", "{kind} completed at {time}."),
    },
    # family: the visitor is worried
    "visit_concern_family": {
        "zh-CN": Template(
            "探访提醒", "今天{time}的探访中，探访人员对老人的状况有所担心，社区将尽快与您联系。"
        ),
        "en": Template(
            "Visit: wellbeing concern",
            "During today's visit at {time} the visitor was concerned about your relative's "
            "wellbeing. The community will contact you soon.",
        ),
    },
    # operator: an emergency repair was not accepted in time
    "emergency_repair_not_accepted": {
        "zh-CN": Template("紧急维修无人接单", "紧急维修{minutes}分钟内无人接单（需求 {ref}）。"),
        "en": Template(
            "Emergency repair not accepted",
            "Emergency repair not accepted within {minutes} minutes (need {ref}).",
        ),
    },
    "emergency_repair_at_risk": {
        "zh-CN": Template(
            "紧急维修即将超时", "紧急维修仍无人接单，{minutes}分钟接单时限即将到期（需求 {ref}）。"
        ),
        "en": Template(
            "Emergency repair at risk",
            "Emergency repair still not accepted; the {minutes}-minute limit is close "
            "(need {ref}).",
        ),
    },
    # operator: a meal did not reach someone living alone
    "welfare_check": {
        "zh-CN": Template(
            "请立即上门确认安全", "送餐未能送达独居老人，请立即上门确认安全（需求 {ref}）。"
        ),
        "en": Template(
            "Welfare check needed",
            "A meal could not be delivered to a resident living alone: please check on them "
            "now (need {ref}).",
        ),
    },
    "wellbeing_concern": {
        "zh-CN": Template(
            "探访发现异常", "探访人员对老人的状况有所担心，请尽快跟进（需求 {ref}）。"
        ),
        "en": Template(
            "Wellbeing concern",
            "The visitor is worried about the resident's wellbeing: please follow up (need {ref}).",
        ),
    },
    # operator: any other escalation
    "need_escalated": {
        "zh-CN": Template("{kind}需要处理", "{kind}需要处理：{reason}（需求 {ref}）。"),
        "en": Template("{kind} needs attention", "{kind} needs attention: {reason} (need {ref})."),
    },
    # volunteer: an offer waits for an answer
    "assignment_offered": {
        "zh-CN": Template(
            "新的{kind}任务", "新的{kind}任务：{place}{start}至{end}，请在{expires}前回复。"
        ),
        "en": Template(
            "New {kind} task",
            "New {kind} task: {place}{start} to {end}. Please answer by {expires}.",
        ),
    },
    # a partner's duty contacts: an offer with its signed links (ADR 0043)
    "partner_offer": {
        "zh-CN": Template(
            "{urgent}新的{kind}任务",
            "{urgent}新的{kind}任务：{place}{start}至{end}，请在{expires}前回复。"
            "接单：{accept} 拒绝：{decline}",
        ),
        "en": Template(
            "{urgent}New {kind} task",
            "{urgent}New {kind} task: {place}{start} to {end}. Please answer by {expires}. "
            "Accept: {accept} Decline: {decline}",
        ),
    },
    # whoever accepted a visit or repair: it starts soon (ADR 0043)
    "reminder": {
        "zh-CN": Template("{kind}任务提醒", "提醒：{place}{start}至{end}的{kind}任务即将开始。"),
        "en": Template(
            "Reminder: {kind} task",
            "Reminder: your {kind} task {place}{start} to {end} starts soon.",
        ),
    },
}

LOWER_FIRST_KIND = frozenset({"assignment_offered", "partner_offer", "reminder"})

# Kinds' labels come from the catalogue (ADR 0045); "other" names an unknown kind.
KIND_LABELS: dict[str, dict[str, str]] = {
    locale: {
        **{kind: entry.labels[locale] for kind, entry in CATALOGUE.items()},
        "other": other,
    }
    for locale, other in (("zh-CN", "需求"), ("en", "Need"))
}

REASON_LABELS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "no_capacity": "暂无可用服务",
        "no_taker": "无人接单",
        "sla_at_risk": "即将超过服务时限",
        "sla_breached": "已超过服务时限",
        "delivery_failed": "服务未能完成",
        "welfare_check": "需要上门确认安全",
        "wellbeing_concern": "探访发现异常",
        "follow_up_needed": "需要再次上门",
        "offer_unanswered": "接单结果迟迟未到",
        "other": "其他原因",
    },
    "en": {
        "no_capacity": "no capacity available",
        "no_taker": "no one accepted it",
        "sla_at_risk": "the service deadline is close",
        "sla_breached": "the service deadline was missed",
        "delivery_failed": "the service could not be carried out",
        "welfare_check": "a welfare check is needed",
        "wellbeing_concern": "a wellbeing concern was reported",
        "follow_up_needed": "another visit is needed",
        "offer_unanswered": "the answer to an offer is overdue",
        "other": "other reason",
    },
}


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def render(key: str, locale: str, params: dict[str, Any]) -> tuple[str, str]:
    """Subject and body of template `key` in `locale` (zh-CN when unknown)."""
    if locale not in LOCALES:
        locale = DEFAULT_LOCALE
    template = TEMPLATES[key][locale]
    values = dict(params)
    if "kind" in values:
        label = KIND_LABELS[locale].get(str(values["kind"]), str(values["kind"]))
        values["kind"] = label
        if locale == "en" and key in LOWER_FIRST_KIND:
            values["kind"] = _lower_first(label)
    if "reason" in values:
        reason = str(values["reason"])
        values["reason"] = REASON_LABELS[locale].get(reason, REASON_LABELS[locale]["other"])
    if values.get("urgent"):
        values["urgent"] = "【紧急】" if locale == "zh-CN" else "[URGENT] "
    if "compound" in values:
        place = values.get("compound")
        if place:
            values["place"] = f"{place}，" if locale == "zh-CN" else f"{place}, "
        else:
            values["place"] = ""
    return template.subject.format(**values), template.body.format(**values)
