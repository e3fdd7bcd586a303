"""The HTTP contract of invoices and payments (the workflow itself runs in tests/flows)."""
import pytest

from tests.handlers.test_api import balance, fund, new_account


@pytest.fixture
def pair(api, admin):
    alice = new_account(api, admin, "tg:alice")
    bob = new_account(api, admin, "tg:bob")
    fund(api, admin, alice["account_id"], 10_000_000)
    return alice, bob


def invoice(api, who, **body):
    return api.call("POST", "/v1/invoices", key=who["api_key"], body=body)


def pay(api, who, key="p1", **body):
    return api.call("POST", "/v1/payments", key=who["api_key"], body=body, headers={"Idempotency-Key": key})


def get_invoice(api, who, payment_hash):
    return api.call("GET", f"/v1/invoices/{payment_hash}", key=who["api_key"], route="GET /v1/invoices/{payment_hash}")


def test_create_and_read_an_invoice(api, pair, sim):
    _, bob = pair
    status, body = invoice(api, bob, amount_msat=150_000, memo="coffee", metadata={"order": "A-17"})
    assert status == 201
    assert set(body) >= {"payment_hash", "payment_request", "amount_msat", "expires_at", "status"}
    assert body["status"] == "OPEN" and body["amount_msat"] == 150_000 and body["payment_request"].startswith("lnbcrt")
    status, read = get_invoice(api, bob, body["payment_hash"])
    assert status == 200 and read["metadata"] == {"order": "A-17"} and read["amount_received_msat"] == 0
    assert read["settled_at"] is None


def test_any_amount_invoice_and_an_empty_body(api, pair):
    _, bob = pair
    status, body = api.call("POST", "/v1/invoices", key=bob["api_key"])
    assert status == 201 and body["amount_msat"] == 0


def test_someone_elses_invoice_is_404(api, pair):
    alice, bob = pair
    _, body = invoice(api, bob, amount_msat=1_000)
    status, err = get_invoice(api, alice, body["payment_hash"])
    assert (status, err["error"]["code"]) == (404, "INVOICE_NOT_FOUND")
    assert get_invoice(api, alice, "zz")[0] == 400


@pytest.mark.parametrize("body", [{"amount_msat": -1}, {"amount_msat": 1.5}, {"expiry_s": 10},
                                  {"description_hash": "abc"}, {"metadata": [1]}, {"color": "red"}])
def test_bad_invoice_requests(api, pair, body):
    _, bob = pair
    status, err = invoice(api, bob, **body)
    assert (status, err["error"]["code"]) == (400, "VALIDATION_ERROR")


def test_external_payment_reserves_and_starts_the_workflow(api, pair, sim, started):
    alice, _ = pair
    pr = sim.external_invoice(200_000, "shop")
    status, body = pay(api, alice, payment_request=pr, max_fee_msat=5_000)
    assert status == 202
    assert body["status"] == "PENDING" and body["amount_msat"] == 200_000 and body["max_fee_msat"] == 5_000
    assert started == [body["payment_id"]]
    assert balance(api, alice["api_key"]) == {"asset": "BTC", "available_msat": 10_000_000 - 205_000,
                                              "pending_out_msat": 205_000, "pending_in_msat": 0}
    # the same request again: the same payment, no second reservation, no second workflow
    assert pay(api, alice, payment_request=pr, max_fee_msat=5_000) == (202, body)
    assert started == [body["payment_id"]]
    status, read = api.call("GET", f"/v1/payments/{body['payment_id']}", key=alice["api_key"],
                            route="GET /v1/payments/{payment_id}")
    assert status == 200 and read["payment_hash"] == body["payment_hash"] and read["fee_msat"] is None


def test_fee_reserve_policy_is_one_percent_with_a_floor(api, pair, sim):
    alice, _ = pair
    small = pay(api, alice, "a", payment_request=sim.external_invoice(50_000, "s"))[1]
    big = pay(api, alice, "b", payment_request=sim.external_invoice(5_000_000, "b"))[1]
    assert small["max_fee_msat"] == 10_000 and big["max_fee_msat"] == 50_000


def test_same_key_other_invoice_is_409(api, pair, sim):
    alice, _ = pair
    pay(api, alice, payment_request=sim.external_invoice(1_000, "a"))
    status, err = pay(api, alice, payment_request=sim.external_invoice(1_000, "b"))
    assert (status, err["error"]["code"]) == (409, "IDEMPOTENCY_KEY_REUSED")


def test_one_hash_is_paid_at_most_once_across_accounts(api, admin, pair, sim):
    alice, bob = pair
    fund(api, admin, bob["account_id"], 1_000_000)
    pr = sim.external_invoice(10_000, "x")
    assert pay(api, alice, payment_request=pr)[0] == 202
    status, err = pay(api, bob, payment_request=pr)
    assert (status, err["error"]["code"]) == (409, "PAYMENT_HASH_IN_USE")
    assert balance(api, bob["api_key"])["available_msat"] == 1_000_000


@pytest.mark.parametrize("body,code", [
    ({"payment_request": "lnbcrt1garbage"}, "INVALID_PAYMENT_REQUEST"),
    ({"payment_request": ""}, "INVALID_PAYMENT_REQUEST"),
    ({"payment_request": 12}, "INVALID_PAYMENT_REQUEST"),
    ({"payment_request": "x" * 8000}, "INVALID_PAYMENT_REQUEST"),
    ({"payment_request": "PR", "amount_msat": 5}, "AMOUNT_NOT_ALLOWED"),
    ({"payment_request": "PR", "max_fee_msat": -1}, "VALIDATION_ERROR"),
    ({"payment_request": "PR", "extra": 1}, "VALIDATION_ERROR"),
])
def test_bad_payment_requests_are_400_and_change_nothing(api, pair, sim, started, body, code):
    alice, _ = pair
    body = {k: (sim.external_invoice(1_000, "x") if v == "PR" else v) for k, v in body.items()}
    status, err = pay(api, alice, **body)
    assert (status, err["error"]["code"]) == (400, code)
    assert started == [] and balance(api, alice["api_key"])["available_msat"] == 10_000_000


def test_amountless_invoice_needs_an_amount(api, pair, sim):
    alice, _ = pair
    pr = sim.external_invoice(0, "tip")  # 0: amount-less
    status, err = pay(api, alice, payment_request=pr)
    assert (status, err["error"]["code"]) == (400, "AMOUNT_REQUIRED")
    status, body = pay(api, alice, "k2", payment_request=pr, amount_msat=3_000)
    assert status == 202 and body["amount_msat"] == 3_000


def on_network(payment_request: str, currency: str) -> str:
    """The same invoice re-signed for another network's currency prefix."""
    import bolt11

    from satflow_dev.simulators.lightning_bolt11 import NodeKey

    invoice = bolt11.decode(payment_request)
    invoice.currency = currency
    return bolt11.encode(invoice, NodeKey.from_label("elsewhere").private_key_hex)


def test_wrong_network_and_insufficient_funds(api, pair, sim):
    alice, bob = pair
    mainnet = on_network(sim.external_invoice(1_000, "shop"), "bc")
    status, err = pay(api, alice, payment_request=mainnet)
    assert (status, err["error"]["code"]) == (400, "WRONG_NETWORK_INVOICE")
    status, err = pay(api, bob, payment_request=sim.external_invoice(1_000, "x"))
    assert (status, err["error"]["code"]) == (422, "INSUFFICIENT_FUNDS")


def test_internal_invoice_settles_at_once_and_free(api, pair, sim, started):
    alice, bob = pair
    _, inv = invoice(api, bob, amount_msat=300_000)
    status, body = pay(api, alice, payment_request=inv["payment_request"])
    assert status == 202 and body["status"] == "SUCCEEDED" and body["internal"] and body["fee_msat"] == 0
    assert started == []
    assert balance(api, alice["api_key"])["available_msat"] == 10_000_000 - 300_000
    assert balance(api, bob["api_key"])["available_msat"] == 300_000
    assert get_invoice(api, bob, inv["payment_hash"])[1]["status"] == "SETTLED"
    status, err = pay(api, bob, "self", payment_request=invoice(api, bob, amount_msat=1)[1]["payment_request"])
    assert (status, err["error"]["code"]) == (422, "SELF_PAYMENT")
