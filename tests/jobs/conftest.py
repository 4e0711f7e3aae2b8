"""Fixtures for the probe-job tests: synthetic in-memory stores (see fake_store.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_store import make_conllu_store, make_wic_store  # noqa: E402


@pytest.fixture(scope="session")
def wic_store():
    return make_wic_store()


@pytest.fixture(scope="session")
def conllu_store():
    return make_conllu_store()
