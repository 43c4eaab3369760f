"""make browser (linli.devstack.browser, ADR 0039): what it decides without downloading."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from linli.devstack import browser

pytestmark = pytest.mark.unit


@pytest.fixture
def no_system_chromium(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(browser, "SYSTEM_CHROMIUM", tmp_path / "absent" / "chromium")


def test_the_system_chromium_is_used_when_present(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    system = tmp_path / "usr-bin-chromium"
    system.write_text("")
    monkeypatch.setattr(browser, "SYSTEM_CHROMIUM", system)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no apt-get: never asked
    assert browser.install(tmp_path) == system
    assert browser.executable(tmp_path) == system
    assert not (tmp_path / ".tools").exists()


@pytest.mark.usefixtures("no_system_chromium")
def test_a_stamped_install_does_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert browser.executable(tmp_path) is None
    wrapper = browser.wrapper_path(tmp_path)
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text("#!/bin/sh\n")
    stamp = tmp_path / ".tools" / "chromium" / "stamp.json"
    stamp.parent.mkdir(parents=True)
    stamp.write_text(json.dumps({"version": browser.STAMP_VERSION, "packages": ["chromium"]}))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # apt-get would fail if called
    assert browser.install(tmp_path) == wrapper
    assert browser.executable(tmp_path) == wrapper


@pytest.mark.usefixtures("no_system_chromium")
def test_without_apt_get_it_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(browser.BrowserInstallError, match="apt-get install chromium"):
        browser.install(tmp_path)
    monkeypatch.setattr(browser, "repo_root", lambda: tmp_path)
    assert browser.main([]) == 1
    assert "apt-get/dpkg-deb" in capsys.readouterr().err
    assert not (tmp_path / ".tools" / "bin").exists()


def test_the_wrapper_sets_libraries_and_fonts(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    for lib in ("usr/lib/chromium/libEGL.so", "usr/lib/x86_64-linux-gnu/pulseaudio/libx.so.1"):
        (prefix / lib).parent.mkdir(parents=True, exist_ok=True)
        (prefix / lib).write_text("")
    binary = prefix / "usr/lib/chromium/chromium"
    binary.write_text('#!/bin/sh\necho "$LD_LIBRARY_PATH|$FONTCONFIG_FILE|$*"\n')
    binary.chmod(0o755)
    wrapper = tmp_path / "bin" / "chromium"
    browser._write_wrapper(prefix, wrapper)
    out = subprocess.run(
        [str(wrapper), "--headless"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LD_LIBRARY_PATH": "/keep"},
    ).stdout.strip()
    libpath, fonts, args = out.split("|")
    assert libpath.split(":") == [
        str(prefix / "usr/lib/chromium"),
        str(prefix / "usr/lib/x86_64-linux-gnu/pulseaudio"),
        "/keep",
    ]
    assert args == "--headless"
    conf = Path(fonts).read_text()
    assert f"<dir>{prefix / 'usr/share/fonts'}</dir>" in conf
    assert "/etc/fonts/fonts.conf" in conf
