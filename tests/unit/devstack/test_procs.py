"""The ServiceProcess helper, exercised with `python -m http.server` as a stand-in service."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from harness.procs import ProcessGroup, ServiceNotReady, ServiceProcess

from linli.devstack.servers import free_port

pytestmark = pytest.mark.unit


def test_wait_http_then_kill(tmp_path: Path) -> None:
    # http.server answers 200 for an existing file, so a file named readyz is a probe.
    (tmp_path / "readyz").write_text("ok")
    port = free_port()
    proc = ServiceProcess(
        "http.server", str(port), "--bind", "127.0.0.1", log_dir=tmp_path / "logs", cwd=tmp_path
    )
    with proc:
        proc.wait_http(f"http://127.0.0.1:{port}", timeout=10)
        assert "GET /readyz" in proc.output()
        proc.kill()
        assert proc.returncode == -signal.SIGKILL


def test_a_dying_service_fails_fast_with_its_log(tmp_path: Path) -> None:
    group = ProcessGroup(tmp_path)
    proc = group.start("json.tool", "/no/such/file", name="broken")
    with pytest.raises(ServiceNotReady, match="exited with code") as info:
        proc.wait_http("http://127.0.0.1:9", timeout=10)
    assert "No such file" in str(info.value)
    group.stop_all()


def test_terminate_is_graceful(tmp_path: Path) -> None:
    args = (str(free_port()), "--bind", "127.0.0.1")
    proc = ServiceProcess("http.server", *args, log_dir=tmp_path, cwd=tmp_path)
    proc.start()
    assert proc.running
    code = proc.terminate(timeout=5)
    assert code == -signal.SIGTERM
    assert not proc.running
