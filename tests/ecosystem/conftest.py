"""Ecosystem tests: the real API handler on moto (the handler tests' fixtures), plus the local runtime for the
third-party client tests (test_clients_*.py)."""
from __future__ import annotations

from tests.handlers.conftest import admin, api, sim, started  # noqa: F401  (fixtures shared with tests/handlers)
