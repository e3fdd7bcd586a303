"""BOLT11 edge cases found in review: sub-msat amounts and decades-long expiries are refused up front."""
import pytest

from satflow.domain import errors
from satflow.domain.payments import decode_payment_request
from satflow_dev.simulators.lightning import LightningSimulator

NOW = 1_795_266_000


@pytest.fixture
def sim():
    return LightningSimulator(clock=lambda: NOW)


@pytest.mark.parametrize("hrp", ["lnbcrt1p", "lnbcrt15p", "lnbcrt0n", "lnbcrt05u", "lnbcrtn"])
def test_fractional_zero_or_malformed_amounts_are_invalid(sim, hrp):
    real = sim.external_invoice(10_000, "x")
    forged = hrp + real[real.rfind("1"):]  # the amount part the bolt11 library would round away
    with pytest.raises(errors.InvalidPaymentRequest):
        decode_payment_request(forged, "regtest", NOW)


def test_whole_msat_amounts_and_amountless_still_decode(sim):
    assert decode_payment_request(sim.external_invoice(10_000, "x"), "regtest", NOW).amount_msat == 10_000
    assert decode_payment_request(sim.external_invoice(0, "tip"), "regtest", NOW).amount_msat is None


def test_an_invoice_valid_for_more_than_30_days_is_refused(sim):
    long_lived = sim.external_invoice(10_000, "x", expiry_s=31 * 24 * 3600)
    with pytest.raises(errors.InvalidPaymentRequest, match="30 days"):
        decode_payment_request(long_lived, "regtest", NOW)
    assert decode_payment_request(sim.external_invoice(10_000, "x", expiry_s=29 * 24 * 3600), "regtest", NOW)
