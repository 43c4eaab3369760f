"""Pure parts of notifications: the SSRF guard, retries, signatures, SSE frames."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from linli.notifications.settings import NotificationsSettings
from linli.notifications.webhooks.delivery import (
    parse_retry_after,
    retry_delay,
    sign,
    webhook_id,
)
from linli.notifications.webhooks.service import new_secret
from linli.notifications.webhooks.ssrf import (
    UnsafeUrl,
    check_endpoint,
    check_url,
    is_internal,
    resolve_checked,
)
from linli.notifications.webhooks.stream import frame
from linli.servicekit.sealing import SecretBox

pytestmark = [pytest.mark.unit]

REFUSED = [
    "http://example.com/",
    "ftp://example.com/",
    "javascript:alert(1)",
    "https://127.0.0.1/",
    "https://127.0.0.2:8443/x",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/",
    "https://[::ffff:10.0.0.1]/",
    "https://[64:ff9b::a9fe:a9fe]/",
    "https://[2002:7f00:1::]/",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/",
    "https://0x7f000001/",
    "https://0X7F.0.0.1/",
    "https://2130706433/",
    "https://017700000001/",
    "https://0177.0.0.1/",
    "https://127.1/",
    "https://10.1.2.3/",
    "https://172.31.255.255/",
    "https://192.168.0.1/",
    "https://100.64.0.1/",
    "https://100.127.255.254/",
    "https://0.0.0.0/",
    "https://224.0.0.251/",
    "https://239.255.255.250/",
    "https://255.255.255.255/",
    "https://[fe80::1%25eth0]/",
    "https://[fc00::1]/",
    "https://[ff02::1]/",
    "https://[::]/",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://api.localhost/",
    "https://metadata.google.internal/",
    "https://printer.local/",
    "https://intranet/",
    "https://user:pw@example.com/",
    "https://example.com@127.0.0.1/",
    "https://example.com/#frag",
    "https://exa mple.com/",
    "https://example.com:99999/",
    "",
    "https://",
]


@pytest.mark.parametrize("url", REFUSED)
def test_ssrf_corpus_refused(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_url(url)


@pytest.mark.parametrize(
    "url",
    ["https://example.com/hook", "https://93.184.215.14/x", "https://[2606:4700::1111]:8443/"],
)
def test_public_https_accepted(url: str) -> None:
    assert check_url(url).scheme == "https"


def test_development_allows_http_and_loopback_but_not_odd_spellings() -> None:
    assert check_url("http://127.0.0.1:9000/hook", allow_insecure=True).port == 9000
    assert check_url("http://localhost/hook", allow_insecure=True).host == "localhost"
    with pytest.raises(UnsafeUrl):
        check_url("http://0x7f000001/", allow_insecure=True)
    with pytest.raises(UnsafeUrl):
        check_url("file:///etc/passwd", allow_insecure=True)


def test_is_internal_covers_embedded_ipv4() -> None:
    import ipaddress

    assert is_internal(ipaddress.ip_address("::ffff:169.254.169.254"))
    assert not is_internal(ipaddress.ip_address("8.8.8.8"))


async def test_names_resolving_inside_are_refused() -> None:
    answers = {
        "evil.example": ["127.0.0.1"],
        "half.example": ["93.184.215.14", "192.168.1.10"],
        "v6.example": ["::ffff:10.0.0.1"],
        "good.example": ["93.184.215.14"],
    }

    async def resolver(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError("no such host")
        return answers[host]

    for host in ("evil.example", "half.example", "v6.example", "missing.example"):
        with pytest.raises(UnsafeUrl):
            await check_endpoint(f"https://{host}/", resolver=resolver)
    _, ip = await check_endpoint("https://good.example/", resolver=resolver)
    assert str(ip) == "93.184.215.14"
    target = check_url("http://evil.example/", allow_insecure=True)
    assert str(await resolve_checked(target, allow_insecure=True, resolver=resolver)) == (
        "127.0.0.1"
    )


def test_retry_after_and_schedule() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = datetime.now(UTC) + timedelta(seconds=60)
    http_date = later.strftime("%a, %d %b %Y %H:%M:%S GMT")
    value = parse_retry_after(http_date)
    assert value is not None
    assert 55 <= value <= 61
    settings = NotificationsSettings(environment="test")
    rng = random.Random(1)
    delays = [retry_delay(settings, n, rng) for n in range(1, 9)]
    assert delays[-1] is None
    spent = [d for d in delays if d is not None]
    assert len(spent) == len(settings.retry_schedule_s)
    for delay, base in zip(spent, settings.retry_schedule_s, strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    assert 20 * 3600 <= sum(settings.retry_schedule_s) <= 36 * 3600


def test_signatures_verify_with_standardwebhooks_and_rotation() -> None:
    old, new = new_secret(), new_secret()
    assert old.startswith("whsec_")
    body = json.dumps({"id": "e1", "data": {"note": "午餐已送达"}}, ensure_ascii=False).encode()
    msg_id = webhook_id("e1", uuid.uuid4())
    # A non-UTC aware time is normalised before signing (NOTES.md).
    now = datetime.now(timezone(timedelta(hours=8)))
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign([new, old], msg_id, now, body),
    }
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    tampered = body.replace(b"e1", b"e2")
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(tampered, headers)
    stale = now - timedelta(minutes=10)
    headers_old = {
        **headers,
        "webhook-timestamp": str(int(stale.timestamp())),
        "webhook-signature": sign([new], msg_id, stale, body),
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body, headers_old)


def test_sse_frame() -> None:
    body = b'{"id":"e1","type":"linli.need.submitted.v1"}'
    assert frame(7, "linli.need.submitted.v1", body) == (
        b"id: 7\nevent: linli.need.submitted.v1\ndata: " + body + b"\n\n"
    )
    assert frame(8, "t", b'{\n"a":1}').endswith(b'data: {\ndata: "a":1}\n\n')


def test_sealing_and_production_refusals() -> None:
    box = SecretBox(None)
    sealed = box.seal("whsec_x")
    assert sealed != "whsec_x"
    assert box.open(sealed) == "whsec_x"
    base = {
        "environment": "production",
        "nats_user": "n",
        "nats_password": "p",
        "database_url": "postgresql://u:p@db/linli",
        "stream_replicas": 3,
        "offer_link_key": "o" * 40,
    }
    with pytest.raises(ValueError, match="allow_insecure_endpoints"):
        NotificationsSettings(**base, allow_insecure_endpoints=True, secrets_key="k")
    # `cryptography` is a dependency (imported statically), so only the key can be missing.
    with pytest.raises(ValueError, match="SECRETS_KEY"):
        NotificationsSettings(**base)
