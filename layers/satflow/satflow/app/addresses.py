"""Use cases: issuing on-chain addresses (deposit addresses for users, change addresses for our own batches).

Address scheme and gap policy
-----------------------------
One BIP84 account key (``SATFLOW_DEPOSIT_ACCOUNT_KEY``, public only) serves the whole deployment: one global
receive chain (``m/84'/coin'/account'/0/i``) for every user's deposit addresses and one change chain (``.../1/i``)
for the payout batcher. Each index comes from an atomic counter per chain (DynamoDB ``UpdateItem ADD`` with
``ReturnValues=UPDATED_NEW``), so every index is issued at most once and owned by exactly one account; the owner is
recorded by script (what the chain monitor looks up) and by owner, and the address joins the monitor's index in the
same transaction, before it is returned. The network is explicit everywhere (``svc.network``): a tpub/vpub on
mainnet or an xpub on a test network is refused.

Consequences for gaps:

* We never need a gap limit ourselves: the monitor watches every issued address, however far apart a user's
  addresses are on the shared chain (user A may hold index 7 and 9 000 012).
* A failed allocation (the transaction after the counter did not commit) burns its index: a hole nobody was ever
  given, harmless.
* A wallet restoring from the xpub (disaster recovery, audit) stops after ``gap_limit`` consecutive unused
  addresses. Unused addresses are normal here (users ask for addresses they never fund), so operations export the
  xpub together with ``domain.addresses.restore_gap_limit(issued_count, used_indices)`` for each chain, computed
  from the counters and the deposits/UTXOs. Bitcoin Core's ``importdescriptors`` with ``range`` = the counter
  needs no gap limit at all.
* Every call issues a new address (no reuse, for the payer's privacy). Abuse (a client requesting millions) only
  grows the index (8 bytes per address in the monitor's memory); a per-account rate limit belongs with the other
  limits (risk issue).
"""
from __future__ import annotations

from satflow.domain import errors
from satflow.domain.accounts import AccountStatus, Principal, Scope
from satflow.domain.addresses import Chain
from satflow.domain.deposits import DepositAddress
from satflow.domain.onchain import HOT_WALLET_OWNER

from .accounts import require_scope
from .ports import Services


def new_deposit_address(svc: Services, principal: Principal) -> DepositAddress:
    """A fresh BIP84 receive address owned by the caller's account (scope ``receive``)."""
    account_id = require_scope(principal, Scope.RECEIVE)
    account = svc.accounts.get(account_id)
    if account is None:
        raise errors.AccountNotFound("account not found", account_id=account_id)
    if account.status is AccountStatus.CLOSED:  # frozen accounts may still receive
        raise errors.AccountClosed("a closed account cannot receive deposits", account_id=account_id)
    index, address, _script = svc.chain.allocate_address(
        account_id, int(Chain.RECEIVE), account_key=_account_key(svc), network=svc.network, at=svc.clock())
    return DepositAddress(address=address, index=index, network=svc.network)


def new_change_address(svc: Services) -> tuple[int, str, str]:
    """A fresh change address of the hot wallet (chain 1): (index, address, script_pubkey_hex). The chain monitor
    recognises outputs to it and records them as our UTXOs once confirmed."""
    return svc.chain.allocate_address(HOT_WALLET_OWNER, int(Chain.CHANGE), account_key=_account_key(svc),
                                      network=svc.network, at=svc.clock())


def _account_key(svc: Services) -> str:
    if not svc.deposit_account_key:
        raise RuntimeError("set SATFLOW_DEPOSIT_ACCOUNT_KEY (the BIP84 account xpub/tpub or wpkh descriptor)")
    return svc.deposit_account_key
