from __future__ import annotations

import json
from pathlib import Path

from linli.contracts.registry import REGISTRY
from linli.contracts.schemagen import check, find_root, generate, main

ROOT = find_root(Path(__file__))


def test_checked_in_schemas_have_not_drifted() -> None:
    drifted = check(ROOT)
    assert drifted == [], (
        "generated contract files are out of date; run "
        "`uv run python -m linli.contracts.schemagen`: "
        + ", ".join(str(p.relative_to(ROOT)) for p in drifted)
    )


def test_one_schema_per_registry_entry() -> None:
    files = generate(ROOT)
    schemas = {p.name: json.loads(text) for p, text in files.items() if p.suffix == ".json"}
    assert len(schemas) == len(REGISTRY)
    for spec in REGISTRY:
        schema = schemas[f"{spec.short}.v{spec.version}.json"]
        assert schema["$id"] == f"https://linli.dev/schemas/{spec.short}.v{spec.version}.json"
        assert schema["properties"]["type"]["const"] == spec.type
        assert {"id", "source", "type", "specversion", "time", "community", "data"} <= set(
            schema["required"]
        )
    catalogue = files[ROOT / "docs" / "events.md"]
    for spec in REGISTRY:
        assert f"## {spec.type}" in catalogue


def test_check_reports_drift(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.uv.workspace]\nmembers = []\n")
    assert main(["--root", str(tmp_path)]) == 0
    assert main(["--root", str(tmp_path), "--check"]) == 0
    target = tmp_path / "libs/contracts/schemas/need.submitted.v1.json"
    target.write_text("{}\n")
    stale = tmp_path / "libs/contracts/schemas/need.vanished.v1.json"
    stale.write_text("{}\n")
    assert set(check(tmp_path)) == {target, stale}
    assert main(["--root", str(tmp_path), "--check"]) == 1
