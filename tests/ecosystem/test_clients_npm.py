"""An LndHub client from npm (lightning-backends' lndhub backend) against the local runtime: the account's
lndhub:// link, balance, add invoice (paid from outside, credited), pay an invoice (through the payment workflow),
list transactions. The package is installed from the registry with `npm ci` on first use (node_modules is ignored;
package-lock.json pins every version)."""
from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from .runtime_helpers import available, call, credit_settled_invoices, new_account, started_runtime

JS = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="module")
def node_client() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the npm client test")
    if not (JS / "node_modules" / "lightning-backends").is_dir():
        # Install scripts are not run: third-party code runs only as the test's client (secp256k1 falls back to
        # its pure-JS implementation).
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=JS, check=True,
                       timeout=300, capture_output=True)
    return JS / "lndhub_client.js"


@pytest.fixture(scope="module")
def runtime():
    with started_runtime() as rt:
        yield rt


def lndhub(client: Path, secret: str, command: str, argument: str | None = None):
    args = ["node", str(client), secret, command] + ([argument] if argument is not None else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["ok"], answer["error"]
    return answer["result"]


def test_lightning_backends_lndhub_client_against_the_runtime(runtime, node_client):
    alice = new_account(runtime, f"eco:hub-{uuid.uuid4().hex[:6]}", fund_msat=500_000)
    status, wallet = call(runtime, "POST", "/v1/lndhub", key=alice["api_key"])
    assert status == 201, wallet
    secret = wallet["uri"]
    assert secret == f"lndhub://{alice['account_id']}:{wallet['password']}@{runtime.url}/lndhub"

    assert lndhub(node_client, secret, "balance") == 500_000  # the backend reports msat (sat x 1000)

    # receive: the client adds an invoice, the outside network pays it, the inbound flow credits it
    added = lndhub(node_client, secret, "addinvoice", "150000")
    import bolt11

    invoice = bolt11.decode(added["invoice"])
    assert invoice.amount_msat == 150_000
    assert lndhub(node_client, secret, "checkpayment", invoice.payment_hash) == {"preimage": None, "settled": False}
    status, body = call(runtime, "POST", "/_sim/lightning/pay", body={"payment_request": added["invoice"]})
    assert status == 200, body
    credit_settled_invoices(runtime)
    assert lndhub(node_client, secret, "checkpayment", invoice.payment_hash)["settled"] is True
    assert lndhub(node_client, secret, "balance") == 650_000

    # send: /payinvoice waits for the payment workflow and answers with the preimage
    status, external = call(runtime, "POST", "/_sim/lightning/invoices", body={"amount_msat": 200_000, "memo": "x"})
    assert status == 201, external
    paid = lndhub(node_client, secret, "payinvoice", external["payment_request"])
    preimage = paid["preimage"]
    import hashlib

    assert preimage and hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == external["payment_hash"]
    assert runtime.service("lightning").simulator.invoice_state(external["payment_hash"]) == "SETTLED"
    after = available(runtime, alice["api_key"])
    assert 650_000 - 200_000 - 10_000 < after < 650_000 - 200_000  # amount + the actual fee (< the reserve)

    txs = lndhub(node_client, secret, "gettxs")
    assert [t["payment_hash"] for t in txs] == [external["payment_hash"]]
    assert txs[0]["type"] == "paid_invoice" and txs[0]["payment_preimage"] == preimage
    assert lndhub(node_client, secret, "getpending") == []

    # paying the same invoice again is the same payment, not a second send
    again = lndhub(node_client, secret, "payinvoice", external["payment_request"])
    assert again["preimage"] == preimage and available(runtime, alice["api_key"]) == after


def test_lndhub_wrong_password_is_refused_in_lndhub_shape(runtime, node_client):
    alice = new_account(runtime, f"eco:hub-{uuid.uuid4().hex[:6]}")
    status, body = call(runtime, "POST", "/lndhub/auth?type=auth",
                        body={"login": alice["account_id"], "password": "sk_" + "x" * 43})
    assert (status, body) == (401, {"error": True, "code": 1, "message": "bad auth"})
    bad = f"lndhub://{alice['account_id']}:sk_{'y' * 43}@{runtime.url}/lndhub"
    done = subprocess.run(["node", str(node_client), bad, "balance"], capture_output=True, text=True, timeout=60)
    assert '"ok":false' in done.stdout and "bad auth" in done.stdout
