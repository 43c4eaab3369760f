"""`make bench` still runs: a few needs at one low rate, end to end, into a temp dir.

Only that the bench completes and writes its files is checked; timings on a shared
two-core machine are not something a test can assert.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)  # the stack's own start (initdb, migrations, tokens) is most of it
def test_bench_smoke_writes_its_files(tmp_path: Path) -> None:
    out = tmp_path / "results"
    doc = tmp_path / "benchmarks.md"
    chart = tmp_path / "benchmarks-lifecycle.png"
    log = tmp_path / "bench.log"
    command = [sys.executable, "-m", "bench.lifecycle", "--smoke", "--out", str(out)]
    command += ["--doc", str(doc), "--chart", str(chart)]
    with log.open("wb") as sink:
        proc = subprocess.run(
            command,
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=280,
            check=False,
        )
    assert proc.returncode == 0, log.read_text()[-5000:]

    result = json.loads((out / "lifecycle.json").read_text())
    for key in (
        "command",
        "machine",
        "config",
        "setup",
        "idle",
        "rungs",
        "sustained",
        "raw_ceiling",
        "ratios",
        "memory_idle",
        "memory_after",
        "targets",
    ):
        assert key in result, key
    assert result["config"]["smoke"] is True
    (rung,) = result["rungs"]
    for key in ("offered_rate", "fulfilled_pct", "http_post_ms", "stages_ms", "cpu", "memory"):
        assert key in rung, key
    assert set(rung["stages_ms"]) == {
        "need.submitted",
        "slot.reserved",
        "assignment.offered",
        "accepted",
        "delivered",
        "need.fulfilled",
    }
    assert set(result["raw_ceiling"]) == {"jetstream_two_hop", "reserve_tx"}

    text = doc.read_text()
    assert "# Benchmarks" in text
    assert "python -m bench.lifecycle --smoke" in text
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
