"""The Lightning side of the flow tests, on either backend (``lightning_flow``'s parameter).

* ``simulator``: devtools' LightningSimulator in-process (httpx.MockTransport), lnd's default forwarding
  policy (1 sat + 1 ppm), so a payment carries a fee.
* ``lnd``: the session's regtest stack: our adapter talks to the real master lnd over TLS with its macaroon; the
  external lnd plays the outside world (its invoices, its payments). The only route is the direct channel, so a
  real payment's fee is 0: the tests compare the fee we post with what the node itself reports.

Both give our LndRestClient a transport that counts sends and tracks (:class:`CountingTransport`), so "LND was
asked to send this hash exactly once" is checked on the real node too.
"""
from __future__ import annotations

import base64
import hashlib
import os
import ssl
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from satflow.adapters.lnd import LndRestClient

from tests.realnodes.lightning_backends import CHANNEL_MSAT, ExternalPaymentFailed, LightningBackend

from .harness import CountingTransport

SIM_URL = "http://lnd.sim"


def payment_hash_of(payment_request: str) -> str:
    from satflow_dev.simulators.lightning import LightningSimulator

    return LightningSimulator.payment_hash_of(payment_request)


@dataclass
class FlowLightning:
    name: str
    client: LndRestClient  # our node, what svc.lnd() returns
    counting: CountingTransport
    observer: LndRestClient  # our node again, for the tests' own questions (not counted)
    _external_invoice: Callable[[int | None, str, int], str]
    _external_pay: Callable[[str, int | None], None]
    _hold_invoice: Callable[[int], tuple[str, str]]
    _settle_hold: Callable[[str], None]
    _cancel_hold: Callable[[str], None]
    sim: Any = None  # the simulator, on that backend only
    stack: Any = None  # the regtest stack, on that backend only

    def external_invoice(self, amount_msat: int | None, memo: str = "", expiry_s: int = 3600) -> str:
        """An invoice of the outside world for us to pay."""
        return self._external_invoice(amount_msat, memo, expiry_s)

    def external_pay(self, payment_request: str, amount_msat: int | None = None) -> None:
        """The outside world pays one of our node's invoices (raises ExternalPaymentFailed when it cannot)."""
        self._external_pay(payment_request, amount_msat)

    def hold_invoice(self, amount_msat: int) -> tuple[str, str]:
        """(payment request, payment hash) of an outside invoice whose payee holds our HTLC until told: the
        payment stays IN_FLIGHT (a hold invoice on the external lnd; a held script on the simulator)."""
        return self._hold_invoice(amount_msat)

    def settle_hold(self, payment_hash: str) -> None:
        self._settle_hold(payment_hash)

    def cancel_hold(self, payment_hash: str) -> None:
        self._cancel_hold(payment_hash)

    unknown_node_invoice = staticmethod(LightningBackend.unknown_node_invoice)
    payment_hash_of = staticmethod(payment_hash_of)

    def node_invoice_state(self, payment_hash: str) -> str:
        return self.observer.lookup_invoice(payment_hash).state.value

    def node_payment(self, payment_hash: str) -> Any:
        """Our node's own record of an outbound payment (PaymentOutcome)."""
        return self.observer.track_payment(payment_hash, wait_s=0)

    def close(self) -> None:
        self.client.close()
        self.observer.close()


def simulator_lightning(clock: Callable[[], float]) -> FlowLightning:
    from satflow_dev.simulators.lightning import ExternalPaymentError, LightningSimulator

    # Our outbound capacity as on the regtest stack (one 5,000,000-sat channel of ours), so "more than the
    # channel can carry" fails the same way on both; a quiet stream stays open for 2 s, as lnd keeps it open.
    sim = LightningSimulator(clock=clock, our_balance_msat=CHANNEL_MSAT, stream_idle_s=2.0)
    counting = CountingTransport(sim.transport(), payment_hash_of)

    def pay(payment_request: str, amount_msat: int | None) -> None:
        try:
            sim.external_pay(payment_request, amount_msat)
        except ExternalPaymentError as exc:
            raise ExternalPaymentFailed(str(exc)) from exc

    def hold(amount_msat: int) -> tuple[str, str]:
        from satflow_dev.simulators.lightning import PaymentScript

        request = sim.external_invoice(amount_msat)
        payment_hash = sim.payment_hash_of(request)
        sim.script(PaymentScript.succeed(hold=True), payment_hash)
        return request, payment_hash

    return FlowLightning(
        name="simulator",
        client=LndRestClient(base_url=SIM_URL, macaroon_hex=sim.macaroon_hex, transport=counting.transport),
        counting=counting,
        observer=LndRestClient(base_url=SIM_URL, macaroon_hex=sim.macaroon_hex, transport=sim.transport()),
        _external_invoice=lambda amount, memo, expiry: sim.external_invoice(amount, memo, expiry_s=expiry),
        _external_pay=pay,
        _hold_invoice=hold,
        _settle_hold=lambda payment_hash: sim.resolve(payment_hash, "SUCCEEDED"),
        # What lnd reports when the payee cancels a held HTLC (checked against the real node by the same test).
        _cancel_hold=lambda payment_hash: sim.resolve(payment_hash, "FAILED",
                                                      failure_reason="INCORRECT_PAYMENT_DETAILS"),
        sim=sim,
    )


def lnd_lightning(stack: Any) -> FlowLightning:
    master = stack.master
    tls = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(master.tls_cert_path)))
    counting = CountingTransport(tls, payment_hash_of)

    def invoice(amount: int | None, memo: str, expiry: int) -> str:
        return str(stack.external_invoice(amount or 0, memo, expiry)["payment_request"])

    def pay(payment_request: str, amount_msat: int | None) -> None:
        result = stack.external_pay(payment_request, amount_msat)
        if result.get("payment_error"):
            raise ExternalPaymentFailed(result["payment_error"])

    preimages: dict[str, bytes] = {}

    def hold(amount_msat: int) -> tuple[str, str]:
        preimage = os.urandom(32)
        payment_hash = hashlib.sha256(preimage).hexdigest()
        preimages[payment_hash] = preimage
        added = stack.external.rest("POST", "/v2/invoices/hodl", {
            "hash": base64.b64encode(bytes.fromhex(payment_hash)).decode(), "value_msat": str(amount_msat)})
        return str(added["payment_request"]), payment_hash

    def settle(payment_hash: str) -> None:
        stack.external.rest("POST", "/v2/invoices/settle",
                            {"preimage": base64.b64encode(preimages[payment_hash]).decode()})

    def cancel(payment_hash: str) -> None:
        stack.external.rest("POST", "/v2/invoices/cancel",
                            {"payment_hash": base64.b64encode(bytes.fromhex(payment_hash)).decode()})

    return FlowLightning(
        name="lnd",
        # 5 s, not the deployed 10: a held payment's send stream goes quiet after IN_FLIGHT and the adapter then
        # waits for max(wait_s, timeout_s) (see tests/realnodes/README.md), so this bounds the held-payment tests.
        client=LndRestClient(base_url=master.rest_url, macaroon_hex=master.macaroon_hex(), timeout_s=5.0,
                             transport=counting.transport),
        counting=counting,
        observer=master.client(timeout_s=30.0),
        _external_invoice=invoice,
        _external_pay=pay,
        _hold_invoice=hold,
        _settle_hold=settle,
        _cancel_hold=cancel,
        stack=stack,
    )
