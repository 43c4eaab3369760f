"""The short `make faults`: about 200 needs through 10 faults (each kind once), then the
required zeros, read from PostgreSQL and JetStream by the driver (faults/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("faults")
    log = out / "faults.log"
    command = [sys.executable, "-m", "faults", "--needs", "200", "--faults", "10"]
    command += ["--rate", "5", "--volunteers", "5", "--pg-outage", "3", "--drain", "120"]
    command += ["--seed", "7", "--out", str(out)]
    with log.open("wb") as sink:
        subprocess.run(
            command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, timeout=400, check=False
        )
    path = out / "faults.json"
    assert path.exists(), log.read_text()[-5000:]
    found: dict = json.loads(path.read_text())
    return found


@pytest.mark.timeout(420)
def test_every_fault_kind_was_injected(result: dict) -> None:
    assert result["needs_driven"] == 200, result["needs_unsubmitted"]
    assert all(n >= 1 for n in result["faults_by_kind"].values()), result["fault_notes"]


@pytest.mark.timeout(420)
@pytest.mark.parametrize(
    "invariant",
    ["needs_lost", "effects_duplicated", "places_oversold", "dead_letters_not_poison"],
)
def test_required_zero(result: dict, invariant: str) -> None:
    assert result["drained"], result["not_drained"]
    found = result["invariants"][invariant]
    assert found["count"] == 0, found["examples"]


@pytest.mark.timeout(420)
@pytest.mark.parametrize(
    "attack",
    ["cross_community_2xx", "canaries_leaked", "nats_outside_permissions", "ssrf_reached"],
)
def test_attack_found_nothing(result: dict, attack: str) -> None:
    found = result["attacks"][attack]
    assert found["count"] == 0, found["examples"]


@pytest.mark.timeout(420)
def test_attacks_really_ran(result: dict) -> None:
    """A zero above means something only if the search and the probes did their work."""
    canaries = result["attacks"]["canaries_leaked"]
    # The control: the same search finds the canaries where they belong (intake).
    assert canaries["where_they_belong"].get("intake.residents", 0) >= 4
    assert canaries["repair_contact_shown"]
    assert canaries["repair_fulfilled"]
    for place in ("log lines", "span export requests", "metrics lines", "stream messages"):
        assert canaries["searched"].get(place, 0) > 0, place
    assert canaries["searched"]["webhook requests"] > 0
    nats = result["attacks"]["nats_outside_permissions"]
    assert nats["attempts"] >= 10
    assert nats["denied"] == nats["attempts"]
    ssrf = result["attacks"]["ssrf_reached"]
    assert ssrf["registrations"] >= 20
    assert ssrf["refused"] == ssrf["registrations"]
    assert ssrf["stored_blocked"]
    crossed = result["attacks"]["cross_community_2xx"]
    assert crossed["requests"] > 1000
    assert crossed["operations"] > 40
