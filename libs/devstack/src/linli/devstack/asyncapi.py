"""Generate each service's AsyncAPI 3.0 document from its FastStream broker.

`python -m linli.devstack.asyncapi` writes `docs/asyncapi/<service>.yaml`; with
`--check` it writes nothing and exits 1 when a committed document has drifted.
Building an app connects to nothing, so this runs without servers.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
from pathlib import Path

import yaml
from faststream.specification.asyncapi import AsyncAPI

from .stack import SERVICES


def _root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").exists() and (parent / "services").is_dir():
            return parent
    raise RuntimeError("repository root not found")


def render(module: str, name: str) -> str:
    """The AsyncAPI YAML of one service."""
    app_module = importlib.import_module(f"{module}.app")
    app = app_module.build_app(app_module.default_settings())
    broker = app.state.runtime.broker
    spec = AsyncAPI(
        broker,
        title=f"Linli {name}",
        version="1",
        description=f"Subjects that the {name} service consumes and answers.",
    )
    # FastStream's channel order varies between runs; sorted keys keep the file stable.
    document = spec.to_specification().to_jsonable()
    return str(yaml.safe_dump(document, sort_keys=True, allow_unicode=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linli.devstack.asyncapi")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    out_dir = _root() / "docs" / "asyncapi"
    drifted = []
    for spec in SERVICES:
        text = render(spec.module, spec.name)
        path = out_dir / f"{spec.name}.yaml"
        if args.check:
            old = path.read_text() if path.exists() else ""
            if old != text:
                drifted.append(str(path))
                diff = difflib.unified_diff(
                    old.splitlines(keepends=True), text.splitlines(keepends=True), str(path), "now"
                )
                print("".join(list(diff)[:40]))
        else:
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for name in drifted:
        print(f"drifted: {name} (run make schemas)")
    return 1 if drifted else 0


if __name__ == "__main__":
    sys.exit(main())
