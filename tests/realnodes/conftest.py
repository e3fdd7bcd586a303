"""The real-node tier: btcd + two lnd nodes on regtest, DynamoDB Local.

Tests here run the SAME checks against the simulators and against the real components, selected by a fixture
parameter. The real parameter needs the binaries (``make regtest-build`` / ``python -m satflow_dev.regtest
build``); without them it is skipped, unless ``SATFLOW_REALNODES=require`` (CI), where it fails instead.
One regtest stack serves the whole session (about 25 s to start); each test uses fresh invoices and hashes, so
tests do not depend on each other's state. When a real-node test fails, the stack's logs are kept and the
directory is printed at exit.
"""
from __future__ import annotations

import pytest

from tests.realnodes.session_stack import REQUIRE_ENV, session_stack, unavailable  # noqa: F401 (re-exported)


@pytest.fixture(scope="session")
def regtest_stack(request: pytest.FixtureRequest):
    """The session's one regtest stack (shared with tests/flows)."""
    return session_stack(request)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.failed and "realnodes" in item.keywords:
        item.session.testsfailed = max(item.session.testsfailed, 1)


@pytest.fixture(params=["simulator", pytest.param("lnd", marks=pytest.mark.realnodes)])
def lightning(request: pytest.FixtureRequest):
    """Our LND adapter against the simulator, then against the real master node (same test body)."""
    from tests.realnodes.lightning_backends import lnd_backend, simulator_backend

    if request.param == "simulator":
        backend = simulator_backend()
    else:
        backend = lnd_backend(request.getfixturevalue("regtest_stack"))
    yield backend
    backend.client.close()
    backend.raw.close()


@pytest.fixture(params=["simulator", pytest.param("btcd", marks=pytest.mark.realnodes)])
def chain(request: pytest.FixtureRequest):
    """Our Bitcoin RPC adapter against the Core simulator, then against btcd (same test body)."""
    from tests.realnodes.chain_backends import btcd_backend, simulator_backend

    if request.param == "simulator":
        backend = simulator_backend()
    else:
        backend = btcd_backend(request.getfixturevalue("regtest_stack"))
    yield backend
    backend.rpc.close()
