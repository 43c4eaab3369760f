"""Committed generated artefacts match the code (run `make schemas` when this fails)."""

from __future__ import annotations

import pytest

from linli.devstack import asyncapi

pytestmark = pytest.mark.unit


def test_asyncapi_documents_have_not_drifted(capsys: pytest.CaptureFixture[str]) -> None:
    assert asyncapi.main(["--check"]) == 0, capsys.readouterr().out
