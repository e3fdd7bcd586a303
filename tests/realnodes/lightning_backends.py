"""One interface over the two Lightning backends the tests run against.

* ``simulator``: devtools' LightningSimulator through httpx.MockTransport, configured like the real stack
  (one direct channel of 5,000,000 sat to the external node, so no routing fee).
* ``lnd``: our master lnd and the external lnd of the regtest stack (real HTTP, TLS, macaroons).

``client`` is our adapter (LndRestClient) against "our" node; the other methods play the outside world.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from satflow.adapters.lnd import LndRestClient

CHANNEL_MSAT = 5_000_000_000  # the regtest stack's channel each way (sat 5,000,000)


class ExternalPaymentFailed(Exception):
    pass


@dataclass
class LightningBackend:
    name: str
    client: LndRestClient
    our_pubkey: str
    raw: httpx.Client  # the same node, for checks on LND's JSON itself
    _external_invoice: Callable[[int | None, str, int], str]
    _external_pay: Callable[[str, int | None], None]
    wrong_macaroon_client: Callable[[], LndRestClient]

    def external_invoice(self, amount_msat: int | None, memo: str = "", expiry_s: int = 3600) -> str:
        return self._external_invoice(amount_msat, memo, expiry_s)

    def external_pay(self, payment_request: str, amount_msat: int | None = None) -> None:
        self._external_pay(payment_request, amount_msat)

    @staticmethod
    def unknown_node_invoice(amount_msat: int, expiry_s: int = 3600) -> tuple[str, str]:
        """(payment request, payment hash) of a node nobody has a channel with: a valid, signed regtest invoice."""
        from satflow_dev.simulators.lightning_bolt11 import NodeKey, encode_invoice

        payment_hash = hashlib.sha256(os.urandom(32)).hexdigest()
        request = encode_invoice(
            key=NodeKey.from_label(f"unknown-{payment_hash[:8]}"), payment_hash_hex=payment_hash,
            payment_secret_hex=os.urandom(32).hex(), amount_msat=amount_msat, timestamp=int(time.time()),
            expiry_s=expiry_s, memo="nobody routes here",
        )
        return request, payment_hash


def simulator_backend() -> LightningBackend:
    from satflow_dev.simulators.lightning import ExternalPaymentError, LightningSimulator

    # Streams wait up to 2 s for news, as a real node would keep them open (live subscription tests).
    sim = LightningSimulator(our_balance_msat=CHANNEL_MSAT, fee_base_msat=0, fee_rate_ppm=0, stream_idle_s=2.0)
    secret = {**sim.secret(), "url": "https://lnd.sim:8080"}

    def pay(payment_request: str, amount_msat: int | None) -> None:
        try:
            sim.external_pay(payment_request, amount_msat)
        except ExternalPaymentError as exc:
            raise ExternalPaymentFailed(str(exc)) from exc

    return LightningBackend(
        name="simulator",
        client=LndRestClient.from_secret(secret, transport=sim.transport()),
        our_pubkey=sim.our_node.pubkey_hex,
        raw=httpx.Client(base_url=secret["url"], transport=sim.transport(),
                         headers={"Grpc-Metadata-macaroon": sim.macaroon_hex}),
        _external_invoice=lambda amount, memo, expiry: sim.external_invoice(amount, memo, expiry_s=expiry),
        _external_pay=pay,
        wrong_macaroon_client=lambda: LndRestClient.from_secret(
            {**secret, "macaroon_hex": "0201" + "ab" * 40}, transport=sim.transport()),
    )


def lnd_backend(stack: Any) -> LightningBackend:
    import ssl

    master = stack.master

    def invoice(amount: int | None, memo: str, expiry: int) -> str:
        return str(stack.external_invoice(amount or 0, memo, expiry)["payment_request"])

    def pay(payment_request: str, amount_msat: int | None) -> None:
        result = stack.external_pay(payment_request, amount_msat)
        if result.get("payment_error"):
            raise ExternalPaymentFailed(result["payment_error"])

    return LightningBackend(
        name="lnd",
        client=master.client(timeout_s=30.0),
        our_pubkey=master.pubkey,
        raw=httpx.Client(base_url=master.rest_url, timeout=30.0,
                         verify=ssl.create_default_context(cafile=str(master.tls_cert_path)),
                         headers={"Grpc-Metadata-macaroon": master.macaroon_hex()}),
        _external_invoice=invoice,
        _external_pay=pay,
        # The external node's admin macaroon: well-formed, but minted by another root key.
        wrong_macaroon_client=lambda: LndRestClient.from_secret(
            {**master.secret(), "macaroon_hex": stack.external.macaroon_hex()}),
    )
