"""On-chain payouts and their batches on DynamoDB.

Keys (pk / sk):
  PAYOUT#<payout_id>            / PAYOUT                  a payout and its state (QUEUED ... CONFIRMED | CANCELED)
  PAYOUTOPEN#<shard>            / <created_at>#<payout_id>  index of payouts not yet final (the batcher's work list)
  PAYOUTBATCH#<batch_id>        / BATCH                   a batch: inputs, change, tx variants, signing state
  PAYOUTBATCHOPEN#<shard>       / <batch_id>              index of batches not yet final (the batcher's recovery list)

Methods named ``*_items`` return tagged transaction items for the caller's one transaction (the payout record
rides in the ledger transaction that reserves, posts or voids its money). The payout's own ``status`` is the
truth; the open index only says where to look (an index entry lives from creation until the payout is final, so
re-queueing a payout needs no index write).

A batch is stored as one item whose structured parts (inputs, variants) are JSON text: every write is a whole-item
put conditional on the version and status the writer read, so two writers can never interleave.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Iterable, Sequence

from pynamodb.attributes import NumberAttribute, UnicodeAttribute

from satflow.domain import errors
from satflow.domain.ledger import shard_for
from satflow.domain.onchain import PayoutStatus, Priority, Utxo, UtxoStatus
from satflow.domain.payouts import (
    Batch,
    BatchStatus,
    ChangeOutput,
    Payout,
    PayoutNotCancelable,
    TxVariant,
)

from .batch import ItemRead
from .models import BaseItem, Models, key, model_meta
from .paging import all_items
from .transaction import TxItem, delete, put, run_or_raise, update

INDEX_SHARDS = 8
_TERMINAL_BATCH = (BatchStatus.CONFIRMED, BatchStatus.CANCELED, BatchStatus.SUPERSEDED)


def _models(table_name: str, region: str, host: str | None) -> dict[str, type]:
    class PayoutItem(BaseItem):
        Meta = model_meta(table_name, region, host)
        payout_id = UnicodeAttribute()
        account_id = UnicodeAttribute()
        address = UnicodeAttribute()
        script_pubkey_hex = UnicodeAttribute()
        amount_sat = NumberAttribute()
        fee_reserve_sat = NumberAttribute()
        priority = UnicodeAttribute()
        request_hash = UnicodeAttribute()
        status = UnicodeAttribute()
        created_at = UnicodeAttribute()
        updated_at = UnicodeAttribute()
        requeues = NumberAttribute()
        batch_id = UnicodeAttribute(null=True)
        txid = UnicodeAttribute(null=True)
        fee_sat = NumberAttribute(null=True)
        must_spend_inputs_of = UnicodeAttribute(null=True)

    class PayoutIndexItem(BaseItem):
        Meta = model_meta(table_name, region, host)
        ref = UnicodeAttribute()
        priority = UnicodeAttribute(null=True)

    class BatchItem(BaseItem):
        Meta = model_meta(table_name, region, host)
        batch_id = UnicodeAttribute()
        status = UnicodeAttribute()
        priority = UnicodeAttribute()
        version = NumberAttribute()
        value_sat = NumberAttribute()
        body = UnicodeAttribute()  # JSON: payout ids, inputs, change, variants, pending replacement
        task_token = UnicodeAttribute(null=True)
        confirmed_txid = UnicodeAttribute(null=True)
        created_at = UnicodeAttribute()
        updated_at = UnicodeAttribute()

    return {"Payout": PayoutItem, "PayoutIndex": PayoutIndexItem, "Batch": BatchItem}


class DynamoPayoutStore:
    def __init__(self, client: Any, models: Models) -> None:
        self._client = client
        self._table = models.table_name
        meta = models.Account.Meta
        m = _models(models.table_name, getattr(meta, "region", "us-east-1"), getattr(meta, "host", None))
        self._P, self._I, self._B = m["Payout"], m["PayoutIndex"], m["Batch"]

    # ------------------------------------------------------------------ payouts
    def get_payout(self, payout_id: str) -> Payout | None:
        raw = self._get(f"PAYOUT#{payout_id}", "PAYOUT")
        return None if raw is None else self._payout(raw)

    def get_payouts(self, payout_ids: Sequence[str]) -> list[Payout]:
        """Consistent reads of many payouts (missing ids are skipped), in the order given."""
        found: dict[str, Payout] = {}
        ids = list(dict.fromkeys(payout_ids))
        for start in range(0, len(ids), 100):
            keys = [key(f"PAYOUT#{pid}", "PAYOUT") for pid in ids[start:start + 100]]
            request = {self._table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                resp = self._client.batch_get_item(RequestItems=request)
                for raw in resp.get("Responses", {}).get(self._table, []):
                    payout = self._payout(raw)
                    found[payout.payout_id] = payout
                request = resp.get("UnprocessedKeys") or None
        return [found[pid] for pid in ids if pid in found]

    def new_payout_items(self, p: Payout) -> list[TxItem]:
        """The payout record and its open-index entry, for the ledger transaction that reserves its funds."""
        P, I = self._P, self._I
        record = P(f"PAYOUT#{p.payout_id}", "PAYOUT", payout_id=p.payout_id, account_id=p.account_id,
                   address=p.address, script_pubkey_hex=p.script_pubkey_hex, amount_sat=p.amount_sat,
                   fee_reserve_sat=p.fee_reserve_sat, priority=p.priority.value, request_hash=p.request_hash,
                   status=p.status.value, created_at=p.created_at, updated_at=p.updated_at, requeues=p.requeues)
        index = I(*self._open_key(p), ref=p.payout_id, priority=p.priority.value)
        return [
            put(record, P.pk.does_not_exist(), "payout",
                lambda old: errors.Conflict(f"payout {p.payout_id} already exists")),
            put(index, None, "payout_index"),
        ]

    def open_payout_ids(self) -> list[str]:
        """Payouts not yet CONFIRMED/CANCELED, oldest first within each shard."""
        ids: list[str] = []
        for shard in range(INDEX_SHARDS):
            for raw in self._query_all(f"PAYOUTOPEN#{shard}"):
                ids.append(raw["ref"]["S"])
        return ids

    def batch_payouts_items(self, batch: Batch, payouts: Iterable[Payout], shares: dict[str, int],
                            now: str) -> list[TxItem]:
        """QUEUED -> BATCHED (with its batch and planned fee share), only if still QUEUED and not re-queued since."""
        P = self._P
        return [
            update(P(f"PAYOUT#{p.payout_id}", "PAYOUT"),
                   [P.status.set(PayoutStatus.BATCHED.value), P.batch_id.set(batch.batch_id),
                    P.fee_sat.set(shares[p.payout_id]), P.updated_at.set(now)],
                   (P.status == PayoutStatus.QUEUED.value) & (P.requeues == p.requeues), f"payout:{p.payout_id}",
                   lambda old, pid=p.payout_id: errors.Conflict(f"payout {pid} is no longer queued"))
            for p in payouts
        ]

    def move_payouts_items(self, batch: Batch, payouts: Iterable[Payout], to: PayoutStatus,
                           from_: Sequence[PayoutStatus], now: str, *, txid: str | None = None,
                           shares: dict[str, int] | None = None) -> list[TxItem]:
        """Move the payouts of ``batch`` between in-batch states (BATCHED -> SIGNING -> BROADCAST, replacements)."""
        P = self._P
        items = []
        for p in payouts:
            actions = [P.status.set(to.value), P.updated_at.set(now)]
            if txid is not None:
                actions.append(P.txid.set(txid))
            if shares is not None:
                actions.append(P.fee_sat.set(shares[p.payout_id]))
            condition = (P.batch_id == batch.batch_id) & P.status.is_in(*[s.value for s in from_])
            items.append(update(P(f"PAYOUT#{p.payout_id}", "PAYOUT"), actions, condition, f"payout:{p.payout_id}",
                                lambda old, pid=p.payout_id: errors.Conflict(f"payout {pid} changed meanwhile")))
        return items

    def requeue_items(self, batch: Batch, payouts: Iterable[Payout], now: str, *,
                      must_spend_inputs_of: str | None = None) -> list[TxItem]:
        """A cancelled (or abandoned) batch's payouts go back to QUEUED (their next batch gets a new id: requeues +
        1); an abandoned batch binds them: their next transaction must spend its inputs."""
        P = self._P
        bind = [P.must_spend_inputs_of.set(must_spend_inputs_of)] if must_spend_inputs_of else []
        return [
            update(P(f"PAYOUT#{p.payout_id}", "PAYOUT"),
                   [P.status.set(PayoutStatus.QUEUED.value), P.requeues.set(p.requeues + 1), P.updated_at.set(now),
                    P.batch_id.remove(), P.txid.remove(), P.fee_sat.remove()] + bind,
                   (P.batch_id == batch.batch_id)
                   & P.status.is_in(PayoutStatus.BATCHED.value, PayoutStatus.SIGNING.value),
                   f"payout:{p.payout_id}",
                   lambda old, pid=p.payout_id: errors.Conflict(f"payout {pid} changed meanwhile"))
            for p in payouts
        ]

    def review_release_items(self, p: Payout, now: str) -> list[TxItem]:
        """IN_REVIEW -> QUEUED once a risk review approved it: the batcher takes it from there."""
        P = self._P
        return [update(P(f"PAYOUT#{p.payout_id}", "PAYOUT"),
                       [P.status.set(PayoutStatus.QUEUED.value), P.updated_at.set(now)],
                       P.status == PayoutStatus.IN_REVIEW.value, "payout",
                       lambda old: errors.Conflict(f"payout {p.payout_id} is no longer in review"))]

    def finish_payout_items(self, p: Payout, to: PayoutStatus, from_: Sequence[PayoutStatus], now: str, *,
                            txid: str | None = None, fee_sat: int | None = None) -> list[TxItem]:
        """-> CONFIRMED (post) or CANCELED (void), exactly once, with its open-index entry, for the ledger tx."""
        P, I = self._P, self._I
        actions = [P.status.set(to.value), P.updated_at.set(now)]
        if txid is not None:
            actions.append(P.txid.set(txid))
        if fee_sat is not None:
            actions.append(P.fee_sat.set(fee_sat))
        condition = P.status.is_in(*[s.value for s in from_])
        if to is PayoutStatus.CANCELED:  # never refund a payout that a signed transaction may still pay
            condition = condition & P.must_spend_inputs_of.does_not_exist()

        def failed(old: dict | None) -> errors.SatflowError:
            status = (old or {}).get("status", {}).get("S")
            return PayoutNotCancelable(f"payout {p.payout_id} is {status}", payout_id=p.payout_id, status=status)

        return [
            update(P(f"PAYOUT#{p.payout_id}", "PAYOUT"), actions, condition, "payout", failed),
            delete(I(*self._open_key(p)), None, "payout_index"),
        ]

    @staticmethod
    def _open_key(p: Payout) -> tuple[str, str]:
        return f"PAYOUTOPEN#{shard_for(p.payout_id, INDEX_SHARDS)}", f"{p.created_at}#{p.payout_id}"

    # ------------------------------------------------------------------ batches
    def get_batch(self, batch_id: str) -> Batch | None:
        raw = self._get(f"PAYOUTBATCH#{batch_id}", "BATCH")
        return None if raw is None else self._batch(raw)

    def open_batch_ids(self) -> list[str]:
        ids: list[str] = []
        for shard in range(INDEX_SHARDS):
            ids.extend(raw["sk"]["S"] for raw in self._query_all(f"PAYOUTBATCHOPEN#{shard}"))
        return ids

    def new_batch_items(self, batch: Batch) -> list[TxItem]:
        B, I = self._B, self._I
        return [
            put(self._batch_model(batch), B.pk.does_not_exist(), "batch",
                lambda old: errors.Conflict(f"batch {batch.batch_id} already exists")),
            put(I(*self._batch_open_key(batch.batch_id), ref=batch.batch_id), None, "batch_index"),
        ]

    def save_batch_items(self, new: Batch, expected: Batch, tag: str = "batch") -> list[TxItem]:
        """Replace the batch as ``expected`` was read (same version and status); the stored version goes up by one.
        A terminal status also removes it from the open-batch index. ``tag`` names the items when one transaction
        saves several batches."""
        B, I = self._B, self._I
        stored = self._batch_model(new, version=expected.version + 1)
        condition = (B.version == expected.version) & (B.status == expected.status.value)

        def changed(old: dict | None) -> errors.SatflowError:
            status = (old or {}).get("status", {}).get("S")
            return errors.Conflict(f"batch {new.batch_id} changed meanwhile (now {status})",
                                   batch_id=new.batch_id, status=status)

        items = [put(stored, condition, tag, changed)]
        if new.status in _TERMINAL_BATCH:
            items.append(delete(I(*self._batch_open_key(new.batch_id)), None, f"{tag}_index"))
        return items

    @staticmethod
    def _batch_open_key(batch_id: str) -> tuple[str, str]:
        return f"PAYOUTBATCHOPEN#{shard_for(batch_id, INDEX_SHARDS)}", batch_id

    def _batch_model(self, b: Batch, version: int | None = None) -> Any:
        body = {
            "payout_ids": list(b.payout_ids),
            "inputs": [_utxo_json(u) for u in b.inputs],
            "change": asdict(b.change) if b.change else None,
            "variants": [_variant_json(v) for v in b.variants],
            "pending_replacement": _variant_json(b.pending_replacement) if b.pending_replacement else None,
            "selection": b.selection,
            "supersedes": b.supersedes,
        }
        return self._B(f"PAYOUTBATCH#{b.batch_id}", "BATCH", batch_id=b.batch_id, status=b.status.value,
                       priority=b.priority.value, version=b.version if version is None else version,
                       value_sat=b.value_sat, body=json.dumps(body, sort_keys=True, separators=(",", ":")),
                       task_token=b.task_token, confirmed_txid=b.confirmed_txid, created_at=b.created_at,
                       updated_at=b.updated_at)

    # ------------------------------------------------------------------ running a transaction of our own
    def run(self, items: Sequence[TxItem]) -> None:
        """One TransactWriteItems of payout/batch/UTXO items (no ledger transfer): ``run_or_raise``."""
        run_or_raise(self._client, items)

    # ------------------------------------------------------------------ parsing
    def _payout(self, raw: dict) -> Payout:
        m = self._P.from_raw_data(raw)
        return Payout(
            payout_id=m.payout_id, account_id=m.account_id, address=m.address, script_pubkey_hex=m.script_pubkey_hex,
            amount_sat=int(m.amount_sat), fee_reserve_sat=int(m.fee_reserve_sat), priority=Priority(m.priority),
            request_hash=m.request_hash, status=PayoutStatus(m.status), created_at=m.created_at,
            updated_at=m.updated_at, requeues=int(m.requeues or 0), batch_id=m.batch_id, txid=m.txid,
            fee_sat=None if m.fee_sat is None else int(m.fee_sat), must_spend_inputs_of=m.must_spend_inputs_of)

    def _batch(self, raw: dict) -> Batch:
        m = self._B.from_raw_data(raw)
        body = json.loads(m.body)
        change = body.get("change")
        pending = body.get("pending_replacement")
        return Batch(
            batch_id=m.batch_id, priority=Priority(m.priority), payout_ids=tuple(body["payout_ids"]),
            inputs=tuple(_utxo_from(u) for u in body["inputs"]),
            change=ChangeOutput(**change) if change else None, value_sat=int(m.value_sat),
            status=BatchStatus(m.status), variants=tuple(_variant_from(v) for v in body["variants"]),
            created_at=m.created_at, updated_at=m.updated_at, version=int(m.version), task_token=m.task_token,
            pending_replacement=_variant_from(pending) if pending else None, confirmed_txid=m.confirmed_txid,
            selection=body.get("selection"), supersedes=body.get("supersedes"))

    # ------------------------------------------------------------------ reads of a batch (batch.read_many)
    def payout_read(self, payout_id: str) -> ItemRead[Payout | None]:
        return ItemRead(self._client, self._table, f"PAYOUT#{payout_id}", "PAYOUT",
                        lambda raw: None if raw is None else self._payout(raw))

    # ------------------------------------------------------------------ helpers
    def _get(self, pk: str, sk: str) -> dict | None:
        return self._client.get_item(TableName=self._table, Key=key(pk, sk), ConsistentRead=True).get("Item")

    def _query_all(self, pk: str) -> Iterable[dict]:
        kwargs: dict[str, Any] = dict(TableName=self._table, KeyConditionExpression="pk = :pk",
                                      ExpressionAttributeValues={":pk": {"S": pk}}, ConsistentRead=True)
        return all_items(self._client.query, **kwargs)


def _utxo_json(u: Utxo) -> dict:
    return {"txid": u.txid, "vout": u.vout, "value_sat": u.value_sat, "script_pubkey_hex": u.script_pubkey_hex,
            "chain": u.chain, "index": u.index, "height": u.height}


def _utxo_from(d: dict) -> Utxo:
    return Utxo(txid=d["txid"], vout=int(d["vout"]), value_sat=int(d["value_sat"]),
                script_pubkey_hex=d["script_pubkey_hex"], chain=int(d["chain"]), index=int(d["index"]),
                height=int(d["height"]), status=UtxoStatus.RESERVED)


def _variant_json(v: TxVariant) -> dict:
    d = asdict(v)
    d["vouts"], d["shares"] = dict(v.vouts), dict(v.shares)
    return d


def _variant_from(d: dict) -> TxVariant:
    return TxVariant(
        txid=d["txid"], unsigned_psbt=d["unsigned_psbt"], fee_sat=int(d["fee_sat"]), fee_rate=int(d["fee_rate"]),
        vbytes=int(d["vbytes"]), change_sat=int(d["change_sat"]), change_vout=d.get("change_vout"),
        vouts={k: int(v) for k, v in d["vouts"].items()}, shares={k: int(v) for k, v in d["shares"].items()},
        signed_hex=d.get("signed_hex"), broadcast_at=d.get("broadcast_at"))
