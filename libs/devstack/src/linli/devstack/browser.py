"""A Chromium for the browser tests, without changing anything outside the checkout.

``python -m linli.devstack.browser`` (``make browser``, a prerequisite of ``make test``):

* ``/usr/bin/chromium`` exists: nothing to do, the tests use it.
* Otherwise asks apt which packages Debian's ``chromium`` (and a CJK font,
  ``fonts-wqy-zenhei``) would add to this system (``apt-get install --simulate``: nothing is
  installed), fetches those ``.deb`` files with ``apt-get download`` (no root needed),
  unpacks each with ``dpkg-deb -x`` into ``.tools/chromium/root`` and writes the wrapper
  ``.tools/bin/chromium`` (library path, a fontconfig file that adds the unpacked fonts).
  The ``.deb`` files are deleted once unpacked. A stamp makes a second run do nothing.

When apt's own package lists are missing (a machine that never ran ``apt-get update``),
the lists are fetched into ``.tools/chromium/apt`` instead of ``/var/lib/apt``.
ADR 0039 says why.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .paths import repo_root

SYSTEM_CHROMIUM = Path("/usr/bin/chromium")
PACKAGES = ("chromium", "fonts-wqy-zenhei")
STAMP_VERSION = 1


class BrowserInstallError(RuntimeError):
    pass


def wrapper_path(root: Path | None = None) -> Path:
    return (root or repo_root()) / ".tools" / "bin" / "chromium"


def executable(root: Path | None = None) -> Path | None:
    """The Chromium the tests launch: the system's, else the checkout's wrapper, else None."""
    if SYSTEM_CHROMIUM.exists():
        return SYSTEM_CHROMIUM
    wrapper = wrapper_path(root)
    stamp = wrapper.parent.parent / "chromium" / "stamp.json"
    if wrapper.exists() and stamp.exists():
        return wrapper
    return None


def _apt_options(apt_dir: Path | None) -> list[str]:
    if apt_dir is None:
        return []
    return [
        "-o",
        f"Dir::State::Lists={apt_dir / 'lists'}",
        "-o",
        f"Dir::Cache={apt_dir / 'cache'}",
        "-o",
        "Debug::NoLocking=1",
    ]


def _missing_packages(apt_dir: Path | None) -> list[str] | None:
    """Packages apt would install for chromium here; None when apt does not know chromium."""
    proc = subprocess.run(
        [
            "apt-get",
            *_apt_options(apt_dir),
            "install",
            "--simulate",
            "--no-install-recommends",
            *PACKAGES,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    if proc.returncode != 0:
        return None
    names = []
    for line in proc.stdout.splitlines():
        if line.startswith("Inst "):
            names.append(line.split()[1])
    return names


def _private_update(apt_dir: Path) -> None:
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    print(f"browser: apt knows no chromium; fetching package lists into {apt_dir}")
    proc = subprocess.run(
        ["apt-get", *_apt_options(apt_dir), "update"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BrowserInstallError(f"apt-get update (private lists) failed:\n{proc.stderr}")


def _write_wrapper(prefix: Path, wrapper: Path) -> None:
    # Every unpacked directory holding shared libraries (pulseaudio keeps one apart).
    libdirs = sorted({lib.parent for lib in prefix.rglob("lib*.so*") if lib.is_file()})
    fonts_conf = prefix / "fonts.conf"
    cache = prefix / "fontconfig-cache"
    fonts_conf.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
        '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
        f"  <dir>{prefix / 'usr/share/fonts'}</dir>\n"
        f"  <cachedir>{cache}</cachedir>\n"
        "</fontconfig>\n",
        encoding="utf-8",
    )
    libpath = ":".join(str(d) for d in libdirs)
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(
        "#!/bin/sh\n"
        "# Written by python -m linli.devstack.browser (make browser): Debian's chromium\n"
        "# unpacked into this checkout; see docs/adr/0039-browser-tests.md.\n"
        f'export LD_LIBRARY_PATH="{libpath}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n'
        f'export FONTCONFIG_FILE="{fonts_conf}"\n'
        f'exec "{prefix / "usr/lib/chromium/chromium"}" "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(0o755)


def _smoke(binary: Path) -> None:
    proc = subprocess.run(
        [
            str(binary),
            "--headless=new",
            "--no-sandbox",
            "--dump-dom",
            "data:text/html,<p>linli</p>",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if "<p>linli</p>" not in proc.stdout:
        raise BrowserInstallError(
            f"{binary} did not render a page (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )


def install(root: Path, *, force: bool = False) -> Path:
    """Make a Chromium available; return the executable the tests should launch."""
    if SYSTEM_CHROMIUM.exists() and not force:
        print(f"browser: using {SYSTEM_CHROMIUM}")
        return SYSTEM_CHROMIUM
    base = root / ".tools" / "chromium"
    prefix = base / "root"
    stamp = base / "stamp.json"
    wrapper = wrapper_path(root)
    if not force and stamp.exists() and wrapper.exists():
        try:
            if json.loads(stamp.read_text()).get("version") == STAMP_VERSION:
                print(f"browser: {wrapper} is installed")
                return wrapper
        except ValueError:
            pass
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise BrowserInstallError(
            "the browser tests need Chromium: /usr/bin/chromium is missing and apt-get/dpkg-deb "
            "are not available to fetch Debian's chromium into .tools/chromium. Install chromium "
            "(Debian/Ubuntu: apt-get install chromium) or run on a Debian-based machine."
        )
    apt_dir: Path | None = None
    packages = _missing_packages(None)
    if packages is None:
        apt_dir = base / "apt"
        _private_update(apt_dir)
        packages = _missing_packages(apt_dir)
        if packages is None:
            raise BrowserInstallError("apt-get knows no package 'chromium' even after an update")
    if not any(p == "chromium" for p in packages):
        raise BrowserInstallError(
            "apt reports chromium as installed, yet /usr/bin/chromium does not exist"
        )
    if prefix.exists():
        shutil.rmtree(prefix)
    prefix.mkdir(parents=True)
    print(f"browser: downloading {len(packages)} Debian packages: {' '.join(packages)}")
    with tempfile.TemporaryDirectory(dir=base, prefix="debs-") as debs:
        proc = subprocess.run(
            ["apt-get", *_apt_options(apt_dir), "download", *packages],
            cwd=debs,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BrowserInstallError(f"apt-get download failed:\n{proc.stderr}")
        files = sorted(Path(debs).glob("*.deb"))
        if len(files) != len(packages):
            raise BrowserInstallError(
                f"apt-get download gave {len(files)} files for {len(packages)} packages"
            )
        for deb in files:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(prefix)], check=True)
    if apt_dir is not None:
        shutil.rmtree(apt_dir, ignore_errors=True)
    _write_wrapper(prefix, wrapper)
    _smoke(wrapper)
    stamp.write_text(
        json.dumps({"version": STAMP_VERSION, "packages": packages}, indent=2) + "\n",
        encoding="utf-8",
    )
    print(f"browser: installed {wrapper} ({prefix})")
    return wrapper


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linli.devstack.browser", description=__doc__)
    parser.add_argument("--force", action="store_true", help="unpack again into .tools/chromium")
    args = parser.parse_args(argv)
    try:
        install(repo_root(), force=args.force)
    except BrowserInstallError as exc:
        print(f"browser: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
