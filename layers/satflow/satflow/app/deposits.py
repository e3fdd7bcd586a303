"""Use cases: the chain monitor (``MonitorFunction`` job ``chain_scan``) and the deposits API (GET /v1/deposits).

One run of :func:`scan_chain`:

1. **Blocks**, from the stored tip towards the node's tip (at most ``max_blocks``): ``getblockhash`` +
   ``getblock <hash> 2``. If the block's ``previousblockhash`` is not our tip, the chain reorganised: walk our
   block records down (we keep the last ``REORG_WINDOW`` (height, hash)) comparing with the node until they agree
   (the fork point) and disconnect each of our blocks above it, newest first: its deposits become unconfirmed again
   (CONFIRMING -> SEEN; CREDITED stays CREDITED but *orphaned*), its outputs leave the UTXO set (a UTXO already
   RESERVED by a payout batch is logged as an error and left: the gap named below). Then each new block's outputs
   are matched against the address index in memory; candidates are confirmed with one BatchGetItem on the owner
   records; deposits are recorded by txid:vout and our own change outputs become AVAILABLE UTXOs (no ledger entry:
   the money never left the hot wallet). The tip moves conditionally together with the block record, so two runs
   never both advance it, and a block scanned twice changes nothing (every write is keyed and conditional).
2. **Mempool**: ``getrawmempool``, then ``getrawtransaction`` for the txids this container has not checked yet
   (bounded per run): a match is a SEEN deposit with a PENDING ``deposit_seen`` transfer (the user's pending_in).
3. **Deposits in play** (the watch list): confirmation events at 1/3/6 (0 is the sighting), the credit when the
   amount tier's depth is reached (``post_pending`` of the sighting, the UTXO added in the same transaction), and,
   only once the run reached the node's tip and the tip did not move meanwhile, the fate of unconfirmed ones: a
   SEEN deposit no longer in the mempool is dropped (its pending voided), an orphaned credited deposit that no new
   block re-mined is REVERSED with an explicit ``deposit_reversed`` transfer (retried with ``overdraft=True`` when
   the user already spent it: the ledger freezes the account in the same transaction).

Decisions: a credited deposit whose block is disconnected is *not* reversed when the reorg's new blocks contain the
same transaction (the usual case of a short reorg): reversing and re-crediting would only churn the ledger and could
freeze a user over a benign reorg. It is reversed when it is missing from the new chain, even if it is back in the
mempool (unconfirmed money is not credited money); if it confirms again later it is a new *generation* of the
same outpoint (new pending, new credit).

Gaps (named): a reorg that removes a deposit or change output already RESERVED by a payout batch leaves the UTXO
record in place and logs an error: the batch spends an output that no longer exists and must be rebuilt by the
payout engine; a deposit to an address of a closed account is not recorded as a deposit: it is booked against the SUSPENSE account
at its first confirmation, with its output tracked, until an admin assigns it (``POST /v1/admin/suspense/{id}/
assign``; a reorg of that block does not undo the booking: the operator sees the outpoint in the item); a reorg deeper than REORG_WINDOW stops the monitor
(ReorgBeyondWindow) for an operator; mempool watching is per-container and bounded per run (MEMPOOL_TX_PER_RUN):
on mainnet it belongs to a long-lived ZMQ ``rawtx`` listener like the invoice listener - confirmed deposits never
depend on it.
"""
from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

from satflow.domain import errors
from satflow.domain.accounts import Principal, Scope
from satflow.domain.bitcoin import BitcoinBlockNotFound, BitcoinTxNotFound, Block, ChainTransaction, TxOutput
from satflow.domain.deposits import (
    EVENT_DROPPED,
    EVENT_REORGED,
    EVENT_REVERSED,
    REORG_WINDOW,
    AddressRecord,
    BlockRecord,
    ChainTip,
    ConfirmationStep,
    Deposit,
    DepositEvent,
    DepositPolicy,
    ReorgBeyondWindow,
    confirmation_step,
    parse_outpoint,
    reversal_transfer_id,
    seen_event,
    seen_transfer_id,
)
from satflow.domain.ledger import is_system_owner
from satflow.domain.onchain import DepositStatus, Utxo, UtxoStatus
from satflow.domain.templates import deposit_credited, deposit_dropped, deposit_reversed, deposit_seen
from satflow.domain.webhooks import deposit_confirmed_events

from . import webhooks
from .accounts import require_scope
from .ports import Services

log = logging.getLogger(__name__)

DEFAULT_MAX_BLOCKS = 12  # getblock verbosity 2 of a full mainnet block is a few MB of JSON: stay well inside 120 s
START_LOOKBACK = 6  # the first run scans this many blocks back from the node's tip
MEMPOOL_TX_PER_RUN = 500
MAX_REWINDS_PER_RUN = 3
_MEMPOOL_MEMORY = 200_000
MAX_PAGE = 100

# txids this container already matched against the index (the mempool is re-listed every run).
_MEMPOOL_CHECKED: OrderedDict[str, None] = OrderedDict()


# ================================================================================================ the monitor
def scan_chain(svc: Services, max_blocks: int = DEFAULT_MAX_BLOCKS,
               mempool_limit: int = MEMPOOL_TX_PER_RUN) -> dict[str, Any]:
    """One monitor run (safe to run twice or concurrently). Returns counts for the log and metrics."""
    scan = _ChainScan(svc)
    tip, caught_up = scan.sync_blocks(max_blocks)
    mempool = scan.scan_mempool(mempool_limit)
    # Deciding that a transaction is gone needs a complete view: our tip is the node's, and it did not move while
    # the mempool was read (a block mined meanwhile could hold a transaction that just left the mempool).
    decide = caught_up and scan.rpc.getbestblockhash() == tip.hash
    scan.advance_deposits(tip, mempool, decide)
    return {"height": tip.height, "caught_up": caught_up, **{k: v for k, v in sorted(scan.counts.items())}}


@dataclass(frozen=True)
class _Match:
    tx: ChainTransaction
    output: TxOutput
    owner: AddressRecord

    @property
    def outpoint(self) -> str:
        return f"{self.tx.txid}:{self.output.n}"


class _ChainScan:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.chain = svc.chain
        self.rpc = svc.bitcoind()
        self.policy = DepositPolicy.parse(svc.deposit_policy)
        self.counts: Counter[str] = Counter()
        self._tracked: dict[str, Utxo] | None = None  # our outputs, loaded on the first block with inputs

    # -------------------------------------------------------------------------------------------- blocks
    def sync_blocks(self, max_blocks: int) -> tuple[ChainTip, bool]:
        """Returns (our tip, whether it is the node's tip)."""
        node_height = self.rpc.getblockcount()
        tip = self.chain.tip() or self._start(node_height)
        processed = rewinds = 0
        while True:
            if tip.height >= node_height and self._on_active_chain(tip, node_height):
                return tip, True
            if rewinds > MAX_REWINDS_PER_RUN or processed >= max_blocks:
                return tip, False
            if tip.height >= node_height:
                tip, rewinds = self._rewind(tip, node_height), rewinds + 1
                continue
            block = self.rpc.getblock(self.rpc.getblockhash(tip.height + 1))
            if block.previous_hash != tip.hash:
                tip, rewinds = self._rewind(tip, node_height), rewinds + 1
                continue
            if not self._connect(tip, block):
                log.info("another monitor run moved the chain tip past %d; stopping", tip.height)
                return self.chain.tip() or tip, False
            tip = ChainTip(block.height, block.hash)
            processed += 1
            self.counts["blocks"] += 1

    def _start(self, node_height: int) -> ChainTip:
        base = max(0, node_height - START_LOOKBACK)
        record = BlockRecord(base, self.rpc.getblockhash(base), None)
        if not self.chain.init_tip(record, self.svc.clock()):
            return self.chain.tip() or record.tip  # another run initialised it first
        return record.tip

    def _on_active_chain(self, tip: ChainTip, node_height: int) -> bool:
        if tip.height > node_height:
            return False
        try:
            return self.rpc.getblockhash(tip.height) == tip.hash
        except BitcoinBlockNotFound:
            return False

    def _connect(self, tip: ChainTip, block: Block) -> bool:
        self._foreign_spends(block)
        matches = self._match(tx for tx in block.transactions if not tx.is_coinbase)
        existing = self.chain.deposits(m.outpoint for m in matches if not is_system_owner(m.owner.owner))
        deposits, change = [], []
        for m in matches:
            if is_system_owner(m.owner.owner):
                self._record_change(m, block.height)
                change.append(m.outpoint)
            elif self._deposit_in_block(existing.get(m.outpoint), m, block):
                deposits.append(m.outpoint)
        record = BlockRecord(block.height, block.hash, block.previous_hash, tuple(deposits), tuple(change))
        return self.chain.connect_block(tip, record, self.svc.clock())

    def _deposit_in_block(self, existing: Deposit | None, m: _Match, block: Block) -> bool:
        """Record a deposit confirmed in ``block``; False when it is not ours to record (logged)."""
        if existing is None or existing.status is DepositStatus.REVERSED:
            return self._new_sighting(existing, m, block.height, block.hash)
        if existing.height is None:  # seen in the mempool, or orphaned by a reorg and now re-mined
            if existing.status is DepositStatus.CREDITED:
                # The UTXO first (a crash before the confirm below repeats both), so a re-mined credited deposit
                # is never confirmed without its output back in the set.
                self._ensure_utxo(existing, block.height)
            if self.chain.write(self.chain.confirm_items(existing, block.height, block.hash, self.svc.clock())):
                log.info("deposit %s changed meanwhile (another run confirmed it)", m.outpoint)
            self.counts["confirmed"] += 1
            return True
        if existing.block_hash == block.hash:  # this block scanned again: nothing new
            return True
        log.error("deposit %s is recorded in block %s but was found in block %s at height %d; left as recorded",
                  m.outpoint, existing.block_hash, block.hash, block.height)
        return False

    def _foreign_spends(self, block: Block) -> None:
        """An input spending one of OUR tracked outputs in a transaction satflow did not make (not a variant of the
        batch that reserved it): booked against SUSPENSE at once (hot wallet credited, the output SPENT), metric
        ``ForeignSpends``, visible in GET /v1/admin/suspense. Keyed by outpoint: a rescan books nothing twice."""
        if self.svc.solvency is None:
            return
        spends = [(tx, str(inp)) for tx in block.transactions if not tx.is_coinbase for inp in tx.inputs]
        if not spends:
            return
        if self._tracked is None:
            self._tracked = {u.outpoint: u for u in self.svc.solvency.tracked_utxos()}
        from .solvency import book_suspense
        from satflow.domain.solvency import SUSPENSE_FOREIGN_SPEND

        for tx, outpoint in spends:
            utxo = self._tracked.get(outpoint)
            if utxo is None:
                continue
            if utxo.reserved_by and self.svc.payouts is not None:
                from .payouts import on_our_input_spent  # the payout side's one rule for "is this spend ours"

                if on_our_input_spent(self.svc, outpoint, tx.txid) != "unknown":
                    continue  # our own batch, one of its fee bumps, or the ABANDONED batch it was handed over from
            log.error("FOREIGN SPEND: our output %s (%d sat) spent by %s in block %d, which satflow did not make",
                      outpoint, utxo.value_sat, tx.txid, block.height)
            try:
                booked = book_suspense(
                    self.svc, kind=SUSPENSE_FOREIGN_SPEND, reference=outpoint, amount_msat=utxo.value_sat * 1000,
                    at=self.svc.clock(), details={"outpoint": outpoint, "spending_txid": tx.txid,
                                                  "height": block.height, "was": utxo.status.value},
                    extra=[self.svc.solvency.foreign_spend_item(utxo, tx.txid)])
            except errors.Conflict:
                booked = 0  # the output changed meanwhile (another run booked it)
            self._tracked.pop(outpoint, None)
            self.counts["foreign_spends"] += booked

    def _record_change(self, m: _Match, height: int) -> None:
        utxo = Utxo(txid=m.tx.txid, vout=m.output.n, value_sat=m.output.value_sat,
                    script_pubkey_hex=m.output.script_pubkey_hex, chain=m.owner.chain, index=m.owner.index,
                    height=height)
        if self.svc.utxos.add(utxo):
            self.counts["change_outputs"] += 1

    def _rewind(self, tip: ChainTip, node_height: int) -> ChainTip:
        """Disconnect our blocks above the fork point, newest first; returns the fork point (the new tip)."""
        records = [r for r in self.chain.recent_blocks(REORG_WINDOW) if r.height <= tip.height]
        for position, record in enumerate(records):
            if record.height <= node_height and self._node_hash(record.height) == record.hash:
                fork, disconnected = record, records[:position]
                break
        else:
            raise ReorgBeyondWindow(
                f"the node's chain does not contain any of our last {len(records)} blocks (tip {tip.height}); "
                "an operator must reconcile deposits above the fork by hand")
        self.counts["reorgs"] += 1
        log.warning("chain reorganisation: fork at %d, disconnecting %d block(s) above it", fork.height,
                    len(disconnected))
        for record, below in zip(disconnected, disconnected[1:] + [fork]):
            self._disconnect(record)
            if not self.chain.disconnect_block(record, below.tip, self.svc.clock()):
                log.info("another monitor run is rewinding; stopping at %d", record.height)
                return self.chain.tip() or record.tip
            self.counts["blocks_disconnected"] += 1
        return fork.tip

    def _node_hash(self, height: int) -> str | None:
        try:
            return self.rpc.getblockhash(height)
        except BitcoinBlockNotFound:
            return None

    def _disconnect(self, record: BlockRecord) -> None:
        at = self.svc.clock()
        found = self.chain.deposits(record.deposits)
        for outpoint in record.deposits:
            d = found.get(outpoint)
            if d is None or d.block_hash != record.hash:
                continue  # already disconnected by an earlier (interrupted) run
            if d.status is DepositStatus.CREDITED:
                self._remove_utxo(outpoint, "credited deposit")  # before anything else: no batch may pick it now
            event = DepositEvent(EVENT_REORGED, 0, d.generation, at, record.height)
            self.chain.write(self.chain.orphan_items(d, record.hash, event))
            _MEMPOOL_CHECKED.pop(d.txid, None)  # it may be back in the mempool: look at it again
            self.counts["deposits_disconnected"] += 1
        for outpoint in record.change:
            self._remove_utxo(outpoint, "change output")

    def _remove_utxo(self, outpoint: str, what: str) -> None:
        txid, vout = parse_outpoint(outpoint)
        utxo = self.svc.utxos.get(txid, vout)
        if utxo is None:
            return
        if utxo.status is UtxoStatus.AVAILABLE and not self.chain.write(self.svc.utxos.remove_items(utxo)):
            self.counts["utxos_removed"] += 1
            return
        utxo = self.svc.utxos.get(txid, vout) or utxo
        log.error("reorg removed %s %s but its UTXO is %s (batch %s): left in place; that batch spends an output "
                  "that no longer exists and must be rebuilt", what, outpoint, utxo.status.value, utxo.reserved_by)
        self.counts["utxo_conflicts"] += 1

    def _ensure_utxo(self, d: Deposit, height: int) -> None:
        utxo = Utxo(txid=d.txid, vout=d.vout, value_sat=d.amount_sat, script_pubkey_hex=d.script_pubkey_hex,
                    chain=d.chain, index=d.index, height=height)
        self.svc.utxos.add(utxo)  # idempotent: an existing record is left as it is

    # -------------------------------------------------------------------------------------------- mempool
    def scan_mempool(self, limit: int) -> set[str]:
        """Record SEEN deposits for mempool transactions paying our addresses; returns the mempool's txids."""
        txids = self.rpc.getrawmempool()
        fresh = [txid for txid in txids if txid not in _MEMPOOL_CHECKED][:limit]
        transactions = []
        for txid in fresh:
            try:
                transactions.append(self.rpc.getrawtransaction(txid).transaction)
            except BitcoinTxNotFound:
                continue  # left the mempool meanwhile (mined or replaced): the block scan or a later run sees it
        matches = [m for m in self._match(transactions) if not is_system_owner(m.owner.owner)]
        existing = self.chain.deposits(m.outpoint for m in matches)
        for m in matches:
            d = existing.get(m.outpoint)
            if d is None or d.status is DepositStatus.REVERSED:
                self._new_sighting(d, m, None, None)
        _remember(fresh)
        self.counts["mempool_checked"] += len(fresh)
        return set(txids)

    # -------------------------------------------------------------------------------------------- matching
    def _match(self, transactions: Iterable[ChainTransaction]) -> list[_Match]:
        """Our outputs among ``transactions``. The index is refreshed *after* the transactions were fetched: an
        address paid in them was handed out before they existed, so its allocation is in the index we read."""
        outputs = [(tx, out) for tx in transactions for out in tx.outputs if out.value_sat > 0]
        if not outputs:
            return []
        matcher = self.chain.address_index().matcher
        candidates = matcher.candidates(out.script_pubkey_hex for _, out in outputs)
        if not candidates:
            return []
        owners = self.chain.owners(candidates)  # one BatchGetItem (per 100 candidates)
        self.counts["index_false_positives"] += len(candidates) - len(owners)
        return [_Match(tx, out, owners[out.script_pubkey_hex]) for tx, out in outputs
                if out.script_pubkey_hex in owners]

    # -------------------------------------------------------------------------------------------- ledger steps
    def _new_sighting(self, previous: Deposit | None, m: _Match, height: int | None, block_hash: str | None) -> bool:
        """First sighting of an outpoint (or of a new generation after a reversal): the deposit record and its
        PENDING deposit_seen transfer in one ledger transaction."""
        at = self.svc.clock()
        generation = 0 if previous is None else previous.generation + 1
        account_id = m.owner.owner
        deposit = Deposit(
            txid=m.tx.txid, vout=m.output.n, account_id=account_id, amount_sat=m.output.value_sat,
            address=m.owner.address, script_pubkey_hex=m.output.script_pubkey_hex, chain=m.owner.chain,
            index=m.owner.index, status=DepositStatus.SEEN if height is None else DepositStatus.CONFIRMING,
            required_confirmations=self.policy.required_confirmations(m.output.value_sat),
            first_seen_at=at if previous is None else previous.first_seen_at, updated_at=at, generation=generation,
            height=height, block_hash=block_hash, milestone=0,
            events=(previous.events if previous else ()) + (seen_event(generation, at, height),))
        transfer = deposit_seen(outpoint=m.outpoint, account_id=account_id, amount_sat=m.output.value_sat,
                                created_at=at, shards=self.svc.system_shards, generation=generation)
        extra = (self.chain.new_deposit_items(deposit) if previous is None
                 else self.chain.regenerate_items(previous, deposit))
        try:
            result = self.svc.ledger.execute(transfer, extra)
        except (errors.AccountClosed, errors.AccountNotFound) as exc:
            log.error("deposit %s of %d sat to %s cannot be recorded (%s): coins unattributed in the hot wallet",
                      m.outpoint, m.output.value_sat, account_id, exc.code)
            self.counts["unattributed"] += 1
            if height is not None:
                self._book_unattributed(m, height, account_id, exc.code)
            return False
        except errors.TransferExistsWithDifferentFields:
            log.error("deposit %s: a different transfer %s exists", m.outpoint, transfer.id)
            raise
        except errors.Conflict:
            log.info("deposit %s was recorded meanwhile by another run", m.outpoint)
            return True
        if not result.replayed:
            self.counts["deposits_seen"] += 1
        return True

    def _book_unattributed(self, m: _Match, height: int, account_id: str, code: str) -> None:
        """A confirmed deposit nobody can be credited with (the account is closed): no silent money. The coins are
        booked against SUSPENSE (hot wallet debited) and their output tracked, in one transaction, for an admin to
        assign (refund to the account, or equity). Booked at its first confirmation, not from the mempool."""
        if self.svc.solvency is None:
            return
        from .solvency import book_suspense
        from satflow.domain.solvency import SUSPENSE_CLOSED_ACCOUNT_DEPOSIT

        utxo = Utxo(txid=m.tx.txid, vout=m.output.n, value_sat=m.output.value_sat,
                    script_pubkey_hex=m.output.script_pubkey_hex, chain=m.owner.chain, index=m.owner.index,
                    height=height)
        extra = self.svc.utxos.add_items(utxo) if self.svc.utxos.get(m.tx.txid, m.output.n) is None else []
        self.counts["suspense_booked"] += book_suspense(
            self.svc, kind=SUSPENSE_CLOSED_ACCOUNT_DEPOSIT, reference=m.outpoint,
            amount_msat=m.output.value_sat * 1000, at=self.svc.clock(), extra=extra,
            details={"outpoint": m.outpoint, "account_id": account_id, "address": m.owner.address, "reason": code,
                     "height": height})

    def advance_deposits(self, tip: ChainTip, mempool: set[str], decide: bool) -> None:
        for d in self.chain.watched_deposits():
            if d.status is DepositStatus.REVERSED:
                continue
            if d.height is None:
                if not decide:
                    continue
                if d.status is DepositStatus.CREDITED:
                    self._reverse(d)
                elif d.txid not in mempool:
                    self._drop(d)
                continue
            at = self.svc.clock()
            step = confirmation_step(d, tip.height, self.policy, at)
            if step.credit and self._node_hash(d.height) != d.block_hash:
                # Its block is no longer the node's block at that height, and no block record of ours lists it
                # (a crash or a concurrent run between the deposit write and the tip move, then a reorg): never
                # credit from a height alone. Orphan it; a re-mine confirms it again, a drop voids it.
                log.warning("deposit %s: block %s is not on the active chain; orphaned before credit", d.outpoint,
                            d.block_hash)
                event = DepositEvent(EVENT_REORGED, 0, d.generation, at, d.height)
                self.chain.write(self.chain.orphan_items(d, d.block_hash, event))
                _MEMPOOL_CHECKED.pop(d.txid, None)
                continue
            if step.credit:
                self._credit(d, step, at)
            elif step.changes_anything:
                if not self.chain.write(self._step_items(d, step, at)):
                    self.counts["events"] += len(step.events)

    def _step_items(self, d: Deposit, step: ConfirmationStep, at: str) -> list:
        """The confirmation pass, with the ``deposit.confirmed`` outbox event in the same transaction when this
        pass records the first confirmation (rewritten, not refused, if that transition is ever written twice)."""
        return self.chain.step_items(d, step, at) + webhooks.outbox_items(
            self.svc, deposit_confirmed_events(d, step, at), overwrite=True)

    def _credit(self, d: Deposit, step: ConfirmationStep, at: str) -> None:
        seen = self.svc.ledger.get_transfer(seen_transfer_id(d.outpoint, d.generation))
        if seen is None:
            log.error("deposit %s has no pending %s: cannot credit", d.outpoint, seen_transfer_id(d.outpoint,
                                                                                                   d.generation))
            return
        extra = self._step_items(d, step, at)
        if self.svc.utxos.get(d.txid, d.vout) is None:  # a record left RESERVED by an earlier generation stays
            extra += self.svc.utxos.add_items(Utxo(
                txid=d.txid, vout=d.vout, value_sat=d.amount_sat, script_pubkey_hex=d.script_pubkey_hex,
                chain=d.chain, index=d.index, height=d.height or 0))
        try:
            result = self.svc.ledger.execute(deposit_credited(seen, created_at=at, generation=d.generation), extra)
        except errors.TransferExistsWithDifferentFields:
            raise
        except (errors.Conflict, errors.PendingAlreadyResolved):
            log.info("deposit %s changed meanwhile; the next run looks again", d.outpoint)
            return
        if not result.replayed:
            self.counts["credited"] += 1
            self.counts["events"] += len(step.events)

    def _drop(self, d: Deposit) -> None:
        seen = self.svc.ledger.get_transfer(seen_transfer_id(d.outpoint, d.generation))
        at = self.svc.clock()
        if seen is None:
            log.error("deposit %s has no pending to void", d.outpoint)
            return
        void = deposit_dropped(seen, created_at=at, generation=d.generation)
        event = DepositEvent(EVENT_DROPPED, 0, d.generation, at)
        try:
            self.svc.ledger.execute(void, self.chain.close_items(d, void.id, event))
        except errors.Conflict:
            log.info("deposit %s changed meanwhile; the next run looks again", d.outpoint)
            return
        log.warning("deposit %s of %d sat to %s vanished before credit: pending voided", d.outpoint, d.amount_sat,
                    d.account_id)
        self.counts["dropped"] += 1

    def _reverse(self, d: Deposit) -> None:
        at = self.svc.clock()
        event = DepositEvent(EVENT_REVERSED, 0, d.generation, at)
        extra = self.chain.close_items(d, reversal_transfer_id(d.outpoint, d.generation), event)
        fields = dict(outpoint=d.outpoint, account_id=d.account_id, amount_sat=d.amount_sat, created_at=at,
                      shards=self.svc.system_shards, generation=d.generation)
        try:
            try:
                self.svc.ledger.execute(deposit_reversed(**fields), extra)
            except errors.InsufficientFunds:
                # Already spent: take it back anyway and freeze the account in the same transaction.
                self.svc.ledger.execute(deposit_reversed(**fields, overdraft=True), extra)
                log.error("deposit %s reversed with an overdraft: account %s frozen, balance below zero",
                          d.outpoint, d.account_id)
                self.counts["overdrafts"] += 1
        except (errors.AccountFrozen, errors.AccountNotFound) as exc:  # a closed account: operator work
            log.error("credited deposit %s of %d sat was reorged out but account %s cannot be debited (%s)",
                      d.outpoint, d.amount_sat, d.account_id, exc.code)
            self.counts["unresolved"] += 1
            return
        except errors.TransferExistsWithDifferentFields:
            # A concurrent run reversed it first (possibly the overdraft variant): the reversal exists once.
            log.info("deposit %s was reversed by another run", d.outpoint)
            return
        except errors.Conflict:
            log.info("deposit %s changed meanwhile; the next run looks again", d.outpoint)
            return
        _MEMPOOL_CHECKED.pop(d.txid, None)
        log.warning("credited deposit %s of %d sat to %s was reorged out: reversed", d.outpoint, d.amount_sat,
                    d.account_id)
        self.counts["reversed"] += 1


def _remember(txids: Iterable[str]) -> None:
    for txid in txids:
        _MEMPOOL_CHECKED[txid] = None
        _MEMPOOL_CHECKED.move_to_end(txid)
    while len(_MEMPOOL_CHECKED) > _MEMPOOL_MEMORY:
        _MEMPOOL_CHECKED.popitem(last=False)


def forget_mempool_cache() -> None:
    """Tests: a fresh container."""
    _MEMPOOL_CHECKED.clear()


# ================================================================================================ the API
@dataclass(frozen=True)
class DepositView:
    """One deposit as GET /v1/deposits shows it (confirmations computed from the monitor's tip)."""

    txid: str
    vout: int
    amount_sat: int
    confirmations: int
    required_confirmations: int
    status: DepositStatus
    address: str
    height: int | None
    first_seen_at: str
    credited_at: str | None
    reversed_at: str | None
    events: tuple[DepositEvent, ...]

    @property
    def outpoint(self) -> str:
        return f"{self.txid}:{self.vout}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "txid": self.txid, "vout": self.vout, "amount_sat": self.amount_sat,
            "confirmations": self.confirmations, "required_confirmations": self.required_confirmations,
            "status": self.status.value, "address": self.address, "height": self.height,
            "first_seen_at": self.first_seen_at, "credited_at": self.credited_at, "reversed_at": self.reversed_at,
            "events": [{"type": e.type, "confirmations": e.confirmations, "at": e.at} for e in self.events],
        }


@dataclass(frozen=True)
class DepositPage:
    items: list[DepositView]
    next_cursor: str | None


def list_deposits(svc: Services, principal: Principal, limit: object = None, cursor: object = None) -> DepositPage:
    """The caller's deposits, newest first (by first sighting), cursor-paginated (scope ``read``)."""
    account_id = require_scope(principal, Scope.READ)
    if limit is None:
        limit = 20
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise errors.ValidationError(f"limit must be an integer from 1 to {MAX_PAGE}", field="limit")
    if cursor is not None and (not isinstance(cursor, str) or not cursor or len(cursor) > 1024):
        raise errors.ValidationError("cursor is not valid", field="cursor")
    deposits, next_cursor = svc.chain.list_deposits(account_id, limit, cursor)
    tip = svc.chain.tip()
    tip_height = tip.height if tip else None
    return DepositPage([_view(d, tip_height) for d in deposits], next_cursor)


def _view(d: Deposit, tip_height: int | None) -> DepositView:
    return DepositView(
        txid=d.txid, vout=d.vout, amount_sat=d.amount_sat, confirmations=d.confirmations(tip_height),
        required_confirmations=d.required_confirmations, status=d.status, address=d.address, height=d.height,
        first_seen_at=d.first_seen_at, credited_at=d.credited_at, reversed_at=d.reversed_at, events=d.events)
