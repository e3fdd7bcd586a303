"""The WebSocket API end to end in the local runtime, with a real WebSocket client: connect with an account key,
subscribe, and receive each committed event of the account exactly once (and none of another account's)."""
from __future__ import annotations

import time

import pytest

from .conftest import Client, call, fan_out, new_account, subscribed_client, transfer, ws_url


def test_a_transfer_reaches_the_recipient_once_and_nobody_else(runtime):
    payer = new_account(runtime, "payer", fund_msat=100_000)
    owner, other = new_account(runtime, "owner"), new_account(runtime, "other")
    mine, theirs = subscribed_client(runtime, owner), subscribed_client(runtime, other)
    try:
        moved = transfer(runtime, payer, owner, 12_345)
        fan_out(runtime)
        got = mine.drain()
        assert [(m["type"], m["data"]["transfer_id"], m["data"]["direction"], m["account_id"]) for m in got] == [
            ("transfer.settled", moved["transfer_id"], "in", owner["account_id"])]
        assert set(got[0]) == {"id", "type", "created_at", "account_id", "data"}
        assert theirs.drain(0.2) == []
    finally:
        mine.close()
        theirs.close()
