"""`python -m satflow_dev.demo --base-url http://127.0.0.1:3000` (what `make demo` runs against `make run`).

Two accounts, an admin funding adjustment, a transfer and its idempotent replay, then balances and history.
Exits non-zero when any status or amount is not what the API promises. Standard library only (urllib), so it
is also a readable example of calling the API.

The admin key comes from --admin-key, else $SATFLOW_ADMIN_KEY, else the file the local runtime writes
(.build/local-admin-key).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY_FILE = Path(".build") / "local-admin-key"

FUNDING_MSAT = 100_000_000
TRANSFER_MSAT = 25_000_000


class DemoFailure(Exception):
    """An answer that differs from the API contract."""


class Api:
    def __init__(self, base_url: str, timeout_s: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, *, key: str | None = None, body: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(f"{self.base_url}{path}", method=method)
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, data=data, timeout=self.timeout_s) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:  # 4xx/5xx still carry the API's JSON error body
            return exc.code, _json(exc.read())

    def expect(self, status: int, method: str, path: str, **kwargs: Any) -> Any:
        got, body = self.call(method, path, **kwargs)
        if got != status:
            raise DemoFailure(f"{method} {path}: expected HTTP {status}, got {got}: {json.dumps(body)}")
        return body


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


def find_admin_key(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get("SATFLOW_ADMIN_KEY"):
        return os.environ["SATFLOW_ADMIN_KEY"]
    for base in (Path.cwd(), REPO_ROOT):
        path = base / ADMIN_KEY_FILE
        if path.is_file():
            return path.read_text().strip()
    return None


def check(condition: bool, message: str) -> None:
    if not condition:
        raise DemoFailure(message)


def step(text: str) -> None:
    print(f"\n== {text}")


def show(data: Any) -> None:
    print(json.dumps(data, indent=2))


def run_demo(api: Api, admin_key: str) -> None:
    step("health")
    show(api.expect(200, "GET", "/v1/health"))

    suffix = secrets.token_hex(4)
    accounts: dict[str, dict[str, Any]] = {}
    for name in ("alice", "bob"):
        step(f"create account {name} (admin)")
        ref = f"demo:{name}-{suffix}"
        created = api.expect(201, "POST", "/v1/accounts", key=admin_key, body={"external_ref": ref, "tier": 1})
        check(created.get("external_ref") == ref and created.get("tier") == 1 and bool(created.get("api_key")),
              f"unexpected account: {created}")
        show({**created, "api_key": created["api_key"][:10] + "..."})  # shown once by the API; keep it off screens
        accounts[name] = created
    alice, bob = accounts["alice"], accounts["bob"]

    step(f"fund alice with {FUNDING_MSAT:,} msat (admin adjustment)")
    adjustment = api.expect(201, "POST", "/v1/admin/adjustments", key=admin_key,
                            headers={"Idempotency-Key": f"demo-fund-{suffix}"},
                            body={"account_id": alice["account_id"], "amount_msat": FUNDING_MSAT,
                                  "direction": "credit", "reason": "demo funding"})
    check(adjustment.get("amount_msat") == FUNDING_MSAT, f"unexpected adjustment: {adjustment}")
    show(adjustment)

    step(f"alice pays bob {TRANSFER_MSAT:,} msat")
    transfer_request = {"to": bob["external_ref"], "amount_msat": TRANSFER_MSAT, "memo": "demo"}
    idempotency = {"Idempotency-Key": f"demo-transfer-{suffix}"}
    transfer = api.expect(201, "POST", "/v1/transfers", key=alice["api_key"], headers=idempotency,
                          body=transfer_request)
    check(transfer.get("status") == "SETTLED" and transfer.get("amount_msat") == TRANSFER_MSAT,
          f"unexpected transfer: {transfer}")
    show(transfer)

    step("the same request again (a client retry): same transfer, no second debit")
    replay = api.expect(201, "POST", "/v1/transfers", key=alice["api_key"], headers=idempotency,
                        body=transfer_request)
    check(replay.get("transfer_id") == transfer["transfer_id"],
          f"replay returned {replay.get('transfer_id')}, expected {transfer['transfer_id']}")
    print(f"replay -> {replay['transfer_id']} (same id)")

    expected = {"alice": FUNDING_MSAT - TRANSFER_MSAT, "bob": TRANSFER_MSAT}
    for name, account in accounts.items():
        step(f"{name}'s balance")
        balance = api.expect(200, "GET", "/v1/balance", key=account["api_key"])
        show(balance)
        btc = next((b for b in balance.get("balances", []) if b.get("asset") == "BTC"), None)
        check(btc is not None, f"{name} has no BTC balance: {balance}")
        check(btc["available_msat"] == expected[name] and btc["pending_out_msat"] == 0
              and btc["pending_in_msat"] == 0, f"{name}: expected {expected[name]:,} msat available, got {btc}")

    step("alice's transactions")
    history = api.expect(200, "GET", "/v1/transactions", key=alice["api_key"])
    show(history)
    items = history.get("items", [])
    ids = [item.get("transfer_id") for item in items]
    check(transfer["transfer_id"] in ids and adjustment["adjustment_id"] in ids,
          f"history lacks the transfer or the funding: {ids}")
    check(ids.count(transfer["transfer_id"]) == 1, "the replayed transfer appears twice in the history")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m satflow_dev.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=os.environ.get("SATFLOW_BASE_URL", "http://127.0.0.1:3000"))
    parser.add_argument("--admin-key", default=None, help="default: $SATFLOW_ADMIN_KEY or .build/local-admin-key")
    args = parser.parse_args(argv)

    admin_key = find_admin_key(args.admin_key)
    if not admin_key:
        print("no admin key: pass --admin-key, set SATFLOW_ADMIN_KEY, or start `make run` (it writes "
              f"{ADMIN_KEY_FILE})", file=sys.stderr)
        return 2
    try:
        run_demo(Api(args.base_url), admin_key)
    except DemoFailure as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"\ncannot reach {args.base_url} ({exc.reason}); is `make run` running?", file=sys.stderr)
        return 1
    print("\nDemo OK: funding, transfer, idempotent replay, balances and history all as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
