"""The operator CLI against a real PostgreSQL: credentials and per-community policy."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from harness.names import Names
from harness.scheduling import drop_all, scheduling_settings, settings_env

from linli.scheduling.cli import main

pytestmark = pytest.mark.integration


def test_credentials_and_policy_commands(
    nats_url: str,
    database_url: str,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = scheduling_settings(names, nats_url, database_url)
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    community = settings.communities_scope[0]
    try:
        assert main(["credentials", "issue", "--community", community, "--role", "operator"]) == 0
        issued = json.loads(capsys.readouterr().out)
        assert issued["token"].startswith("lnl_")
        # The revocation reaches every service through the bucket the streams Job makes.
        assert main(["streams"]) == 0
        capsys.readouterr()
        assert main(["credentials", "revoke", issued["credential_id"]]) == 0
        assert json.loads(capsys.readouterr().out) == {
            "revoked": True,
            "credential_id": issued["credential_id"],
            "everywhere": True,
        }
        # Again: nothing left to revoke here, published again (finishing a failed run).
        assert main(["credentials", "revoke", issued["credential_id"]]) == 0
        assert json.loads(capsys.readouterr().out)["revoked"] is False
        # An unknown id, or not an id at all: a clear error, nothing changed.
        assert main(["credentials", "revoke", str(uuid.uuid4())]) == 2
        assert main(["credentials", "revoke", "nope"]) == 2
        capsys.readouterr()

        assert main(["policy", "set", "*", "--at-risk-fraction", "0.5"]) == 0
        assert main(["policy", "set", community, "--offer-timeout-s", "120"]) == 0
        capsys.readouterr()
        assert main(["policy", "show", community]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown == {"community": community, "at_risk_fraction": 0.5, "offer_timeout_s": 120.0}
        assert main(["dead-letters", "list"]) == 0
        assert capsys.readouterr().out == ""
    finally:
        asyncio.run(drop_all(settings, nats_url))
