"""Service processes for end-to-end and fault tests: `python -m <module>` as a real child."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self
from urllib.parse import urlsplit


class ServiceNotReady(RuntimeError):
    """The process died or did not answer /readyz in time; the message has its log tail."""


class ServiceProcess:
    """One `python -m module` child, output (stdout and stderr merged) in `log_path`.

    The child gets its own session so `kill()` also takes down anything it spawned,
    and so a SIGKILL really is a crash of the whole service.
    """

    def __init__(
        self,
        module: str,
        *args: str,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        inherit_env: bool = True,
        cwd: Path | None = None,
    ) -> None:
        self.module = module
        self.args = list(args)
        self.name = name or module.rsplit(".", 1)[-1]
        self.log_path = Path(log_dir) / f"{self.name}.log"
        base = dict(os.environ) if inherit_env else {}
        # Unbuffered so the log is current when a test fails and we print its tail.
        self.env = {**base, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in _close)
        self._log.write(f"--- starting {' '.join(self.command)}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_http(self, url: str, timeout: float = 20.0) -> None:
        """Block until GET <url>/readyz answers 200 (a URL with a path is used as is)."""
        probe = url if urlsplit(url).path not in ("", "/") else url.rstrip("/") + "/readyz"
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if not self.running:
                raise ServiceNotReady(
                    f"{self.name} exited with code {self.returncode} before {probe} was ready\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(probe, timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise ServiceNotReady(
                    f"{self.name}: {probe} not ready after {timeout}s ({last})\n{self.log_tail()}"
                )
            time.sleep(0.1)

    async def wait_http_async(self, url: str, timeout: float = 20.0) -> None:
        """`wait_http` without blocking the test's event loop."""
        await asyncio.to_thread(self.wait_http, url, timeout)

    def _signal_group(self, sig: int) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM for a graceful shutdown, SIGKILL if it takes longer than `timeout`."""
        if self._proc is None:
            return None
        self._signal_group(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        self._signal_group(signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self._proc.wait()
        self._close()
        return self._proc.returncode

    def kill(self) -> None:
        """Crash the service and its children at once (SIGKILL)."""
        if self._proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self._proc.wait()
        self._close()

    def pause(self) -> None:
        """SIGSTOP: the process hangs but keeps its sockets (no `tc netem` here)."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def output(self) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = "\n".join(self.output().splitlines()[-lines:])
        return f"--- {self.name} log ({self.log_path}), last {lines} lines:\n{tail}"

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()


class ProcessGroup:
    """Every ServiceProcess a test starts, so teardown can stop them all."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.processes: list[ServiceProcess] = []

    def start(
        self,
        module: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> ServiceProcess:
        proc = ServiceProcess(
            module, *args, log_dir=self.log_dir, env={**self.env, **(env or {})}, name=name
        )
        self.processes.append(proc)
        return proc.start()

    def log_tails(self, lines: int = 60) -> str:
        return "\n\n".join(p.log_tail(lines) for p in self.processes)

    def stop_all(self, timeout: float = 5.0) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.terminate(timeout)
