"""Where the checkout is: the one place devstack's tools find the repository root."""

from __future__ import annotations

from pathlib import Path


def repo_root() -> Path:
    """The checkout this code runs from (the directory holding `uv.lock` and the
    Makefile), else the current directory (an installed wheel)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "uv.lock").exists() and (parent / "Makefile").exists():
            return parent
    return Path.cwd()
