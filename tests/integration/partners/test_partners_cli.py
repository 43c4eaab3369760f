"""The operator CLI: credentials for partners and volunteers carry their subject id."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from harness.names import Names

from linli.devstack.servers import free_port
from linli.partners.cli import main

pytestmark = pytest.mark.integration


def test_credentials_issue_names_an_existing_party(
    database_url: str, names: Names, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    schema = names.schema("partners")
    monkeypatch.setenv("LINLI_DATABASE_URL", database_url)
    monkeypatch.setenv("LINLI_DB_SCHEMA", schema)
    monkeypatch.setenv("LINLI_NATS_URL", f"nats://127.0.0.1:{free_port()}")
    volunteer_id = uuid.uuid4()

    async def sql(query: str, *args: object) -> object:
        conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    try:
        assert main(["migrate"]) == 0
        asyncio.run(
            sql(
                "INSERT INTO volunteers (id, display_name, communities, created_by) "
                "VALUES ($1, 'x', '{c-home}', 'test')",
                volunteer_id,
            )
        )
        capsys.readouterr()
        issue = ["credentials", "issue", "--role", "volunteer", "--community", "c-home"]
        assert main([*issue, "--subject-id", str(volunteer_id)]) == 0
        issued = json.loads(capsys.readouterr().out)
        assert issued["token"].startswith("lnl_")
        stored = asyncio.run(
            sql(
                "SELECT subject_id FROM credentials WHERE id = $1",
                uuid.UUID(issued["credential_id"]),
            )
        )
        assert stored == volunteer_id
        assert main(issue) == 2
        assert main([*issue, "--subject-id", str(uuid.uuid4())]) == 2
        # No NATS here: revoked in partners only, said so, exit status 1 (run it again).
        assert main(["credentials", "revoke", issued["credential_id"]]) == 1
        captured = capsys.readouterr()
        assert json.loads(captured.out.splitlines()[-1]) == {
            "revoked": True,
            "credential_id": issued["credential_id"],
            "everywhere": False,
        }
        assert "run the same command again" in captured.err
        assert main(["dead-letters", "list"]) == 0
    finally:
        asyncio.run(sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
