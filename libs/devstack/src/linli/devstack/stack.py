"""`make run`: the whole local stack with no Docker.

Starts PostgreSQL and nats-server from their PyPI wheels, one database role and
schema and one NATS user per service, each service as its own process, loads demo
data, prints where to look and writes the same to `.linli/stack.json`. Ctrl-C stops
everything; starting again keeps the data (and the demo credentials).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats

from linli.servicekit.messaging import provision_streams
from linli.servicekit.settings import ServiceSettings

from . import demo
from .natsconf import (
    admin_user,
    community_app_user,
    community_system_user,
    linli_services,
    provisioner_user,
    render_config,
    service_user,
)
from .servers import NatsServer, PostgresServer, ensure_database, ensure_role, run_sync

DATABASE = "linli"


@dataclass(frozen=True)
class ServiceSpec:
    """One service process of the stack."""

    name: str
    module: str
    port_offset: int


SERVICES = [
    ServiceSpec("intake", "linli.intake", 1),
    ServiceSpec("partners", "linli.partners", 2),
    ServiceSpec("scheduling", "linli.scheduling", 3),
    ServiceSpec("notifications", "linli.notifications", 4),
    ServiceSpec("console", "linli.console", 5),
]
"""What each one may do on NATS is `natsconf.linli_services()`, the same as in Kubernetes."""

API_SERVICES = [spec for spec in SERVICES if spec.name != "console"]
"""The services that hold API credentials and events (the console calls them)."""

DEMO_PASSWORD_KEY = "console-{login}"
"""Where a demo staff account's password is kept in the state (`passwords`)."""


@dataclass
class StackState:
    """Ports and secrets that must survive a restart (kept in .linli/state.json)."""

    nats_port: int = 14222
    pg_port: int = 15432
    http_base: int = 8100
    passwords: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def fernet_key(self) -> str:
        """The key that seals webhook secrets at rest (notifications)."""
        if "fernet" not in self.passwords:
            self.passwords["fernet"] = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        return self.passwords["fernet"]

    def password(self, name: str) -> str:
        if name not in self.passwords:
            self.passwords[name] = secrets.token_urlsafe(24)
        return self.passwords[name]


def _load_state(path: Path) -> StackState:
    if path.exists():
        return StackState(**json.loads(path.read_text()))
    state = StackState(
        nats_port=int(os.environ.get("LINLI_DEV_NATS_PORT", "14222")),
        pg_port=int(os.environ.get("LINLI_DEV_PG_PORT", "15432")),
        http_base=int(os.environ.get("LINLI_DEV_HTTP_BASE", "8100")),
    )
    return state


def _save_state(path: Path, state: StackState) -> None:
    path.write_text(json.dumps(state.__dict__, indent=2))
    path.chmod(0o600)


class Stack:
    """The running local stack."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file = root / "state.json"
        self.state = _load_state(self.state_file)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pg: PostgresServer | None = None
        self.nats: NatsServer | None = None

    def metrics_port(self, spec: ServiceSpec) -> int:
        """Prometheus metrics sit beside the API: 8101 serves the API, 9101 the metrics."""
        return self.state.http_base + 1000 + spec.port_offset

    def service_url(self, spec: ServiceSpec) -> str:
        return f"http://127.0.0.1:{self.state.http_base + spec.port_offset}"

    def start_servers(self) -> None:
        self.pg = PostgresServer(self.root / "pg", port=self.state.pg_port)
        self.pg.start()
        admin_dsn = self.pg.dsn()
        run_sync(ensure_database(admin_dsn, DATABASE))
        for spec in SERVICES:
            run_sync(
                ensure_role(
                    admin_dsn,
                    spec.name,
                    self.state.password(f"pg-{spec.name}"),
                    DATABASE,
                    spec.name,
                )
            )
        users = [
            service_user(access, self.state.password(f"nats-{access.name}"))
            for access in linli_services()
        ]
        users.append(provisioner_user(self.state.password("nats-provisioner")))
        users.append(admin_user(self.state.password("nats-admin")))
        for community in demo.COMMUNITIES:
            users.append(
                community_app_user(
                    community.slug, self.state.password(f"nats-app-{community.slug}")
                )
            )
            # Each community gets its own reply prefix so none can read another's answers.
            users.append(
                community_system_user(
                    community.slug,
                    self.state.password(f"nats-{community.slug}"),
                    inbox_prefix=inbox_prefix(community.slug),
                )
            )
        self.nats = NatsServer(
            self.root / "nats", port=self.state.nats_port, config=render_config(users=users)
        )
        self.nats.start()
        _save_state(self.state_file, self.state)
        # Services may not create streams (least privilege): the provisioner does, once,
        # as the streams Job does in Kubernetes.
        run_sync(
            _provision_streams(
                self.nats.url, "provisioner", self.state.password("nats-provisioner")
            )
        )

    def service_env(self, spec: ServiceSpec) -> dict[str, str]:
        assert self.pg is not None
        assert self.nats is not None
        env = dict(os.environ)
        env.update(
            {
                "LINLI_SERVICE_NAME": spec.name,
                "LINLI_ENVIRONMENT": "development",
                "LINLI_DB_SCHEMA": spec.name,
                "LINLI_DATABASE_URL": (
                    f"postgresql://{spec.name}:{self.state.password(f'pg-{spec.name}')}"
                    f"@127.0.0.1:{self.pg.port}/{DATABASE}"
                ),
                "LINLI_NATS_URL": self.nats.url,
                "LINLI_NATS_USER": spec.name,
                "LINLI_NATS_PASSWORD": self.state.password(f"nats-{spec.name}"),
                "LINLI_HTTP_HOST": "127.0.0.1",
                "LINLI_HTTP_PORT": str(self.state.http_base + spec.port_offset),
                "LINLI_METRICS_PORT": str(self.metrics_port(spec)),
                "LINLI_METRICS_REFRESH_S": "5",
                "LINLI_PROVISION_STREAMS": "false",
            }
        )
        if spec.name == "scheduling":
            # Demo time: one real second is a minute of SLA and offer time.
            env.setdefault("LINLI_TIME_SCALE", "60")
        if spec.name == "notifications":
            # Local receivers (http://127.0.0.1) are allowed in development only.
            env.setdefault("LINLI_ALLOW_INSECURE_ENDPOINTS", "true")
            env["LINLI_SECRETS_KEY"] = self.state.fernet_key()
            env.setdefault("LINLI_SMS_PROVIDER", "file")
            env.setdefault("LINLI_SMS_FILE", str(self.root / "sms.jsonl"))
            # Signed offer links pushed to partners point at partners (ADR 0043).
            env["LINLI_OFFER_LINK_KEY"] = self.state.password("offer-link-key") * 2
            env["LINLI_OFFER_LINK_BASE_URL"] = self.service_url(SERVICES[1])
        if spec.name == "console":
            # The console calls the four services and keeps its staff's tokens sealed.
            for other in API_SERVICES:
                env[f"LINLI_{other.name.upper()}_URL"] = self.service_url(other)
            env["LINLI_SECRETS_KEY"] = self.state.fernet_key()
        if spec.name == "partners":
            # Partners asks intake for contact details on behalf of the accepted helper.
            env["LINLI_INTAKE_URL"] = self.service_url(SERVICES[0])
            env["LINLI_INTAKE_TOKEN"] = self.state.tokens.get("partners_service", "")
            env["LINLI_OFFER_LINK_KEY"] = self.state.password("offer-link-key") * 2
            env["LINLI_SECRETS_KEY"] = self.state.fernet_key()
        return env

    def run_cli(self, spec: ServiceSpec, *args: str, stdin: str | None = None) -> str:
        out = subprocess.run(
            [sys.executable, "-m", spec.module, *args],
            env=self.service_env(spec),
            check=False,
            capture_output=True,
            timeout=60,
            input=stdin.encode() if stdin is not None else None,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"{spec.module} {' '.join(args[:2])} failed:\n{out.stderr.decode()[-2000:]}"
            )
        return out.stdout.decode()

    def ensure_tokens(
        self,
        wanted: dict[str, tuple[str, list[str], str | None]],
        *,
        services: list[str] | None = None,
    ) -> None:
        """Tokens (key: role, communities, subject id) registered once in each named service
        (the four API services by default), with one CLI process per service for all."""
        missing = {key: spec for key, spec in wanted.items() if key not in self.state.tokens}
        if not missing:
            return
        tokens = {key: "lnl_" + secrets.token_urlsafe(32) for key in missing}
        lines = "\n".join(
            json.dumps(
                {
                    "role": role,
                    "communities": communities,
                    "label": f"demo {key}",
                    "subject_id": subject,
                    "token": tokens[key],
                }
            )
            for key, (role, communities, subject) in missing.items()
        )
        for spec in API_SERVICES:
            if services is None or spec.name in services:
                self.run_cli(spec, "credentials", "import", stdin=lines)
        self.state.tokens.update(tokens)
        _save_state(self.state_file, self.state)

    def ensure_token(
        self, key: str, role: str, communities: list[str], *, services: list[str] | None = None
    ) -> str:
        """One token, registered once in each named service (all by default)."""
        self.ensure_tokens({key: (role, communities, None)}, services=services)
        return self.state.tokens[key]

    def ensure_staff(self, communities: list[str], street_office: tuple[str, str]) -> None:
        """Demo console accounts (once): an operator per community (`op-<community>`) and a
        street-office account (`jiedao`) over all of them, each with its own token registered
        in the four services for exactly its communities: an `operator` credential for the
        operators, a `street_office` one for the street office (ADR 0040)."""
        console = next(spec for spec in SERVICES if spec.name == "console")
        slug, name = street_office
        self.run_cli(
            console,
            "street-office",
            "add",
            "--slug",
            slug,
            "--name",
            name,
            *[arg for c in communities for arg in ("--community", c)],
        )
        accounts: list[tuple[str, str, list[str]]] = [
            (f"op-{c}", "community_operator", [c]) for c in communities
        ]
        accounts.append(("jiedao", "street_office", communities))
        missing = [a for a in accounts if f"console_{a[0]}" not in self.state.tokens]
        # One `credentials import` per service for all accounts (each CLI process costs
        # seconds on a busy machine; one per account per service made make run slow).
        self.ensure_tokens(
            {
                f"console_{login}": (
                    "street_office" if role == "street_office" else "operator",
                    held,
                    None,
                )
                for login, role, held in missing
            }
        )
        for login, role, held in missing:
            key = f"console_{login}"
            password = self.state.password(DEMO_PASSWORD_KEY.format(login=login))
            scope = (
                ["--street-office", slug]
                if role == "street_office"
                else [arg for c in held for arg in ("--community", c)]
            )
            self.run_cli(
                console,
                "staff",
                "add",
                "--login",
                login,
                "--name",
                login,
                "--role",
                role,
                *scope,
                "--token",
                self.state.tokens[key],
                "--password-stdin",
                stdin=password + "\n",
            )
        _save_state(self.state_file, self.state)

    def start_services(self) -> None:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        for spec in SERVICES:
            self.run_cli(spec, "migrate")
        self.ensure_token("partners_service", "service", ["*"], services=["intake"])
        for spec in SERVICES:
            log = (logs / f"{spec.name}.log").open("ab")
            self.procs[spec.name] = subprocess.Popen(
                [sys.executable, "-m", spec.module, "serve"],
                env=self.service_env(spec),
                stdout=log,
                stderr=subprocess.STDOUT,
                # Ctrl-C reaches only the stack, which stops services in order.
                start_new_session=True,
            )
        for spec in SERVICES:
            _wait_ready(self.service_url(spec), self.procs[spec.name], logs / f"{spec.name}.log")

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.nats is not None:
            self.nats.stop()
        if self.pg is not None:
            self.pg.stop()

    def describe(self) -> dict[str, Any]:
        assert self.pg is not None
        assert self.nats is not None
        intake = SERVICES[0]
        console = next(spec for spec in SERVICES if spec.name == "console")
        return {
            "console_url": self.service_url(console),
            "console_staff": {
                key.removeprefix("console_"): {
                    "password": self.state.passwords.get(
                        DEMO_PASSWORD_KEY.format(login=key.removeprefix("console_"))
                    )
                }
                for key in self.state.tokens
                if key.startswith("console_")
            },
            "services": {
                spec.name: {
                    "url": self.service_url(spec),
                    "docs": f"{self.service_url(spec)}/docs",
                    "metrics": f"http://127.0.0.1:{self.metrics_port(spec)}/metrics",
                    "log": str(self.root / "logs" / f"{spec.name}.log"),
                    "pid": self.procs[spec.name].pid,
                }
                for spec in SERVICES
            },
            "nats": {
                "url": self.nats.url,
                "admin": {"user": "admin", "password": self.state.password("nats-admin")},
                "apps": {
                    c.slug: {
                        "user": f"app-{c.slug}",
                        "password": self.state.password(f"nats-app-{c.slug}"),
                        "subscribe": f"linli.events.{c.slug}.>",
                    }
                    for c in demo.COMMUNITIES
                },
                "systems": {
                    c.slug: {
                        "user": f"community-{c.slug}",
                        "password": self.state.password(f"nats-{c.slug}"),
                        "inbox_prefix": inbox_prefix(c.slug),
                    }
                    for c in demo.COMMUNITIES
                },
            },
            "postgres": {"url": self.pg.dsn(database=DATABASE), "data_dir": str(self.pg.pgdata)},
            "communities": [c.slug for c in demo.COMMUNITIES],
            "credentials": {
                k: v
                for k, v in self.state.tokens.items()
                if not k.endswith("_service") and not k.startswith("console_")
            },
            "intake_api": f"{self.service_url(intake)}/v1/communities/{demo.COMMUNITIES[0].slug}",
            "partners_api": (
                f"{self.service_url(SERVICES[1])}/v1/communities/{demo.COMMUNITIES[0].slug}"
            ),
        }


async def _provision_streams(url: str, user: str, password: str) -> None:
    nc = await nats.connect(url, user=user, password=password, allow_reconnect=False)
    try:
        await provision_streams(nc.jetstream(), ServiceSettings(service_name="provisioner"))
    finally:
        await nc.close()


def inbox_prefix(community: str) -> str:
    """The reply-subject prefix a community's system must use (nats-py `inbox_prefix`)."""
    return f"_INBOX.{community}"


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with {proc.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout}s; see {log}")


def _write_stack_file(path: Path, info: dict[str, Any]) -> None:
    """Atomically (readers never see half a file), readable by the owner only."""
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.chmod(0o600)  # it holds passwords and tokens
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


def _print_summary(info: dict[str, Any], root: Path) -> None:
    token = info["credentials"].get("operator", "")
    community = info["communities"][0]
    print(f"\nLinli is running (Ctrl-C stops it; data is kept in {root}).\n")
    for name, svc in info["services"].items():
        print(f"  {name:<14} {svc['url']}   API docs: {svc['docs']}   metrics: {svc['metrics']}")
    print(f"  {'nats':<14} {info['nats']['url']}   (user admin, see stack.json)")
    print(f"  {'postgres':<14} {info['postgres']['url']}")
    print(f"\n  demo operator token for {community}:\n    {token}\n")
    print(f"  console: {info['console_url']}  (staff sign-in; passwords in stack.json)")
    for login, account in info["console_staff"].items():
        print(f"    {login:<24} {account['password']}")
    print()
    print("  try:")
    print(f"    curl -s -H 'Authorization: Bearer {token}' \\\n      {info['intake_api']}/needs")
    # The partner directory as HSDS 3.1 with live capacity, and the residents' guide (ADR 0051).
    partners = f"{info['services']['partners']['url']}/v1/communities/{community}"
    guide = f"{info['services']['partners']['url']}/public/v1/communities/{community}/guide"
    print(f"    curl -s -H 'Authorization: Bearer {token}' \\\n      {partners}/hsds/services")
    print(f"    open '{guide}?format=html'")
    # Open311 GeoReport v2 for 311 systems, with the demo's system credential (ADR 0050).
    system = info["credentials"].get("system", "")
    open311 = f"{info['services']['intake']['url']}/open311/v2"
    print(f"    curl -s -H 'Authorization: Bearer {system}' \\\n      {open311}/services.json")
    print(f"\n  everything above, as JSON: {root / 'stack.json'}\n")


def run(root: Path, *, demo_data: bool = True, hold: bool = True, actors: bool = True) -> int:
    stack = Stack(root)
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return  # a second Ctrl-C (or uv forwarding the first) must not cut the shutdown
        stopping = True
        raise KeyboardInterrupt

    # Set both explicitly: a parent such as `uv run` may start us with SIGINT ignored,
    # and Python then keeps ignoring Ctrl-C.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start_servers()
        stack.start_services()
        if demo_data:
            demo.load(stack)
            _save_state(stack.state_file, stack.state)
        info = stack.describe()
        stack_file = root / "stack.json"
        _write_stack_file(stack_file, info)
        if actors:
            logs = root / "logs"
            stack.procs["actors"] = subprocess.Popen(
                [sys.executable, "-m", "linli.devstack.actors", "--stack", str(stack_file)],
                stdout=(logs / "actors.log").open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            info["actors"] = {"log": str(logs / "actors.log"), "pid": stack.procs["actors"].pid}
            _write_stack_file(stack_file, info)  # now with the actors
        _print_summary(info, root)
        while hold:
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; stopping the stack")
                    return 1
            time.sleep(1)
        return 0
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    finally:
        stack.stop()
        with contextlib.suppress(FileNotFoundError):
            (root / "stack.json").unlink()
