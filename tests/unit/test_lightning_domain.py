"""Lightning domain types: outcome semantics (unknown is not failed), validation, BOLT11 network prefixes."""
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from satflow.domain.errors import ValidationError
from satflow.domain.lightning import (
    AddInvoiceResult,
    FailureReason,
    InvalidPaymentRequest,
    InvoiceState,
    NodeInvoice,
    PaymentAlreadyPaid,
    PaymentFailed,
    PaymentInFlight,
    PaymentNotFound,
    PaymentRejected,
    PaymentSucceeded,
    PaymentUnknown,
    RejectionReason,
    bolt11_network,
    outcome_from_dict,
    require_bolt11_network,
    validate_hash_hex,
)

PREIMAGE = "ab" * 32
HASH = "cd" * 32


def test_only_succeeded_and_failed_are_final():
    final = {cls for cls in (PaymentSucceeded, PaymentFailed, PaymentInFlight, PaymentUnknown, PaymentNotFound,
                             PaymentAlreadyPaid, PaymentRejected) if cls.is_final}
    assert final == {PaymentSucceeded, PaymentFailed}


def test_unknown_and_in_flight_are_distinct_from_failed():
    for outcome in (PaymentUnknown("read timeout"), PaymentInFlight(), PaymentNotFound(), PaymentAlreadyPaid()):
        assert not isinstance(outcome, PaymentFailed)
        assert not outcome.is_final


def test_succeeded_validates_and_totals():
    outcome = PaymentSucceeded(preimage_hex=PREIMAGE.upper(), fee_msat=1_001, amount_msat=100_000)
    assert outcome.preimage_hex == PREIMAGE
    assert outcome.total_msat == 101_001


@pytest.mark.parametrize("kwargs", [
    {"preimage_hex": "00" * 32, "fee_msat": 0, "amount_msat": 1},  # LND's in-flight placeholder
    {"preimage_hex": "ab" * 31, "fee_msat": 0, "amount_msat": 1},
    {"preimage_hex": PREIMAGE, "fee_msat": -1, "amount_msat": 1},
    {"preimage_hex": PREIMAGE, "fee_msat": 1.0, "amount_msat": 1},
    {"preimage_hex": PREIMAGE, "fee_msat": 0, "amount_msat": True},
])
def test_succeeded_rejects_bad_fields(kwargs):
    with pytest.raises(ValidationError):
        PaymentSucceeded(**kwargs)


def test_failed_reason_is_coerced_and_checked():
    assert PaymentFailed("NO_ROUTE").reason is FailureReason.NO_ROUTE
    with pytest.raises(ValueError):
        PaymentFailed("FAILURE_REASON_NONE")


@pytest.mark.parametrize("outcome", [
    PaymentSucceeded(PREIMAGE, 5, 1_000),
    PaymentFailed(FailureReason.INSUFFICIENT_BALANCE, "FAILURE_REASON_INSUFFICIENT_BALANCE"),
    PaymentInFlight("x"), PaymentUnknown("timeout"), PaymentNotFound(), PaymentAlreadyPaid("paid"),
    PaymentRejected(RejectionReason.INVOICE_EXPIRED, "invoice expired"),
])
def test_outcomes_round_trip_through_json_dicts(outcome):
    data = outcome.to_dict()
    assert data["status"] == outcome.status
    assert outcome_from_dict(data) == outcome


def test_outcome_from_dict_refuses_unknown_status():
    with pytest.raises(ValidationError):
        outcome_from_dict({"status": "MAYBE"})


def _invoice(**overrides):
    fields = dict(payment_hash=HASH, state="OPEN", value_msat=0, amt_paid_msat=0, settle_index=0, add_index=3,
                  settle_date=0, creation_date=1_000, expiry=60, payment_request="lnbcrt1...", memo="")
    fields.update(overrides)
    return NodeInvoice(**fields)


def test_node_invoice_properties():
    invoice = _invoice()
    assert invoice.state is InvoiceState.OPEN and invoice.is_amountless and not invoice.is_settled
    assert not invoice.is_expired(1_059) and invoice.is_expired(1_060)
    assert not _invoice(state="SETTLED", settle_index=1).is_expired(10_000)


@pytest.mark.parametrize("overrides", [
    {"payment_hash": "zz"}, {"state": "PAID"}, {"value_msat": -1}, {"settle_index": 1.5}, {"add_index": None},
])
def test_node_invoice_rejects_bad_fields(overrides):
    with pytest.raises((ValidationError, ValueError)):
        _invoice(**overrides)


def test_add_invoice_result_normalises_hash():
    assert AddInvoiceResult(HASH.upper(), "lnbcrt1x", 7).payment_hash_hex == HASH


def test_validate_hash_hex():
    assert validate_hash_hex("AB" * 32) == "ab" * 32
    with pytest.raises(ValidationError):
        validate_hash_hex("ab" * 33)


@pytest.mark.parametrize("payment_request, network", [
    ("lnbc1pvjluezsp5zyg3zyg3zyg3z", "bitcoin"),
    ("lnbc2500u1pvjluezpp5qqqsyqcyq5", "bitcoin"),
    ("LNTB20M1PVJLUEZHP58YJMDAN79S", "testnet"),
    ("lntbs10u1pnnx2g5pp59nqev6pghl", "signet"),
    ("lnbcrt1m1pnnx2g5pp59nqev6pghl", "regtest"),
    ("lnbcrt1pnnx2g5pp59nqev6pghlae", "regtest"),
    ("lnsb100n1pnnx2g5pp59nqev6pghl", "simnet"),
    ("lightning:lnbcrt10u1pnnx2g5pp5", "regtest"),
])
def test_bolt11_network_from_prefix(payment_request, network):
    assert bolt11_network(payment_request) == network


@pytest.mark.parametrize("payment_request", ["", "lnurl1dp68gurn8ghj7", "bc1qxy2kgdygjrsqtzq2n0yrf249", "lnxyz1abc",
                                             None, 42])
def test_bolt11_network_refuses_non_invoices(payment_request):
    with pytest.raises(InvalidPaymentRequest):
        bolt11_network(payment_request)


def test_require_bolt11_network():
    assert require_bolt11_network("Lightning:LNBCRT1PX", "regtest") == "lnbcrt1px"
    with pytest.raises(InvalidPaymentRequest) as excinfo:
        require_bolt11_network("lnbc1px", "regtest")
    assert excinfo.value.details == {"field": "payment_request", "network": "bitcoin", "expected_network": "regtest"}


@given(st.sampled_from(["lnbc", "lntb", "lntbs", "lnbcrt", "lnsb"]), st.integers(min_value=1, max_value=10**9),
       st.sampled_from(["", "m", "u", "n", "p"]))
def test_every_amount_keeps_the_network(prefix, amount, multiplier):
    expected = {"lnbc": "bitcoin", "lntb": "testnet", "lntbs": "signet", "lnbcrt": "regtest", "lnsb": "simnet"}
    assert bolt11_network(f"{prefix}{amount}{multiplier}1qqqq") == expected[prefix]


def test_domain_module_imports_no_io_libraries():
    code = (
        "import sys, satflow.domain.lightning; "
        "bad = [m for m in ('httpx', 'boto3', 'botocore', 'pynamodb', 'aws_lambda_powertools') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
