"""One regtest stack per pytest session, whichever test directory asks for it first.

Both ``tests/realnodes/conftest.py`` and ``tests/flows/conftest.py`` define a session fixture ``regtest_stack``;
pytest would cache one value per defining conftest (two stacks, twice the start-up). Both fixtures call
:func:`session_stack` instead, which starts the stack once and stops it when pytest unconfigures.
"""
from __future__ import annotations

import os
from typing import Any

import pytest

REQUIRE_ENV = "SATFLOW_REALNODES"

_stack: Any = None


def unavailable(what: str, how: str) -> None:
    """Skip (developer machine without the build) or fail (CI, SATFLOW_REALNODES=require)."""
    message = f"{what} not built: {how}"
    if os.environ.get(REQUIRE_ENV) == "require":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def session_stack(request: pytest.FixtureRequest) -> Any:
    """The session's RegtestStack (started on first use; stopped at the end, its logs kept if a test failed)."""
    global _stack
    from satflow_dev.regtest.stack import RegtestStack
    from satflow_dev.regtest.toolchain import nodes_built

    if _stack is not None:
        return _stack
    if not nodes_built():
        unavailable("lnd/btcd", "run `make regtest-build` (python -m satflow_dev.regtest build)")
    stack = RegtestStack()
    stack.__enter__()  # a failed start stops what it started and raises: nothing to clean up here
    _stack = stack
    session = request.session

    def stop() -> None:
        global _stack
        if session.testsfailed:
            stack.mark_failed()
        stack.__exit__(None, None, None)
        _stack = None

    request.config.add_cleanup(stop)
    return stack
