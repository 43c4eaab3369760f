"""The local stack under test: `python -m linli.devstack run --no-actors` in a temp dir.

The bench runs the stack exactly as `make run` does, minus the demo actors, so the
figures are those of the services a developer runs. Two settings differ, both through
the environment: fresh free ports, and `LINLI_TIME_SCALE=1`, because the dev stack's
60x clock would expire offers while the services are still catching up under load.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linli.devstack.servers import PostgresServer, free_port

from .procstat import SERVICES, Processes, children, comm, pid_alive


@dataclass
class RunningStack:
    """A started stack: its process, its directory and what it wrote to stack.json."""

    proc: subprocess.Popen[bytes]
    root: Path
    info: dict[str, Any]
    processes: Processes
    started_in_s: float

    @property
    def data_dir(self) -> Path:
        return self.root / "linli"

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every log, for a run that failed."""
        out = []
        for log in [self.root / "stack.log", *sorted((self.data_dir / "logs").glob("*.log"))]:
            with contextlib.suppress(OSError):
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)


def _free_port_run(count: int, attempts: int = 50) -> int:
    """A base port such that base+1 … base+count are free (the stack's HTTP ports)."""
    for _ in range(attempts):
        base = free_port() - 1
        if base + count >= 65535:
            continue
        socks: list[socket.socket] = []
        try:
            for offset in range(1, count + 1):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no run of free ports found on 127.0.0.1")


def start(timeout: float = 240.0) -> RunningStack:
    """Start the stack in a fresh temp dir and wait for its stack.json."""
    root = Path(tempfile.mkdtemp(prefix="linli-bench-"))
    env = {
        **os.environ,
        "LINLI_DEV_NATS_PORT": str(free_port()),
        "LINLI_DEV_PG_PORT": str(free_port()),
        "LINLI_DEV_HTTP_BASE": str(_free_port_run(len(SERVICES))),
        "LINLI_TIME_SCALE": "1",
    }
    log = root / "stack.log"
    began = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "linli.devstack",
            "run",
            "--no-actors",
            "--data-dir",
            str(root / "linli"),
        ],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        # Its own process group: Ctrl-C on the bench must not reach the stack before
        # the bench has stopped it in order (and the stack stops its own children).
        start_new_session=True,
    )
    stack_file = root / "linli" / "stack.json"
    try:
        deadline = time.monotonic() + timeout
        while not stack_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"stack exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"stack not up after {timeout:.0f}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        info = json.loads(stack_file.read_text())
        processes = _find_processes(proc.pid, info)
    except BaseException:
        _stop(proc, root, known=[])
        raise
    return RunningStack(proc, root, info, processes, time.monotonic() - began)


def _find_processes(stack_pid: int, info: dict[str, Any]) -> Processes:
    """nats-server and the postmaster are the stack's children; services are in stack.json."""
    by_comm = {comm(pid): pid for pid in children(stack_pid)}
    if "nats-server" not in by_comm or "postgres" not in by_comm:
        raise RuntimeError(f"stack children not found: {by_comm}")
    return Processes(
        services={name: int(info["services"][name]["pid"]) for name in SERVICES},
        nats=by_comm["nats-server"],
        postmaster=by_comm["postgres"],
    )


def stop(stack: RunningStack) -> None:
    """Ctrl-C to the stack (it stops services, NATS, PostgreSQL), then delete its data."""
    known = [*stack.processes.services.values(), stack.processes.nats, stack.processes.postmaster]
    _stop(stack.proc, stack.root, known=known)


def _stop(proc: subprocess.Popen[bytes], root: Path, known: list[int]) -> None:
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        # Only if the stack could not stop its children: each by its own pid.
        for pid in known:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
    finally:
        # As root the data lives under /var/lib/linli-postgres, linked from here.
        PostgresServer(root / "linli" / "pg").delete_data()
        shutil.rmtree(root, ignore_errors=True)
