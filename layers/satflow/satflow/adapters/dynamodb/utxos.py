"""Our on-chain outputs, shared by the chain monitor (adds deposits and batch change when they confirm, removes
them on a reorg) and the payout batcher (reserves inputs for a batch, marks them spent when it confirms).

Reservation is a condition of the batch's own transaction (``status = AVAILABLE``), so two batchers can never
spend one output."""
from __future__ import annotations

from typing import Any, Iterable

from satflow.domain import errors
from satflow.domain.ledger import shard_for
from satflow.domain.onchain import Utxo, UtxoStatus

from .models import Models
from .paging import all_items
from .transaction import TxItem, delete, put, transact, update

UTXO_SHARDS = 8


class DynamoUtxoStore:
    def __init__(self, client: Any, models: Models) -> None:
        self._client = client
        self._m = models

    def _model(self, txid: str, vout: int, /, **attrs: Any) -> Any:
        # positional-only: add_items passes txid=/vout= again as item attributes
        outpoint = f"{txid}:{vout}"
        return self._m.Utxo(f"UTXO#{shard_for(outpoint, UTXO_SHARDS)}", outpoint, **attrs)

    def add_items(self, utxo: Utxo) -> list[TxItem]:
        """Record a confirmed output of ours (idempotent: an existing record is left as it is)."""
        U = self._m.Utxo
        item = self._model(utxo.txid, utxo.vout, txid=utxo.txid, vout=utxo.vout, value_sat=utxo.value_sat,
                           script_pubkey_hex=utxo.script_pubkey_hex, chain=utxo.chain, index=utxo.index,
                           height=utxo.height, status=utxo.status.value, reserved_by=utxo.reserved_by)
        return [put(item, U.pk.does_not_exist(), f"utxo:{utxo.outpoint}")]

    def add(self, utxo: Utxo) -> bool:
        """False when it was already recorded (a rescan of the same block)."""
        return transact(self._client, self.add_items(utxo)) is None

    def remove_items(self, utxo: Utxo) -> list[TxItem]:
        """A reorg took the output away: only an unreserved one can simply disappear."""
        U = self._m.Utxo
        return [delete(self._model(utxo.txid, utxo.vout), U.status == UtxoStatus.AVAILABLE.value,
                       f"utxo:{utxo.outpoint}",
                       lambda old: errors.Conflict(f"output {utxo.outpoint} is {old and old['status']['S']}"))]

    def reserve_items(self, utxos: Iterable[Utxo], batch_id: str) -> list[TxItem]:
        U = self._m.Utxo
        return [update(self._model(u.txid, u.vout), [U.status.set(UtxoStatus.RESERVED.value), U.reserved_by.set(batch_id)],
                       U.status == UtxoStatus.AVAILABLE.value, f"utxo:{u.outpoint}",
                       lambda old, o=u.outpoint: errors.Conflict(f"output {o} is no longer available"))
                for u in utxos]

    def release_items(self, utxos: Iterable[Utxo], batch_id: str) -> list[TxItem]:
        """A batch cancelled before broadcast gives its inputs back."""
        U = self._m.Utxo
        return [update(self._model(u.txid, u.vout), [U.status.set(UtxoStatus.AVAILABLE.value), U.reserved_by.remove()],
                       (U.status == UtxoStatus.RESERVED.value) & (U.reserved_by == batch_id), f"utxo:{u.outpoint}")
                for u in utxos]

    def handover_items(self, utxos: Iterable[Utxo], from_batch: str, to_batch: str) -> list[TxItem]:
        """An abandoned batch's inputs pass to its successor without ever being AVAILABLE: the successor spends
        them all, so the abandoned transaction and the successor cannot both confirm."""
        U = self._m.Utxo
        return [update(self._model(u.txid, u.vout), [U.reserved_by.set(to_batch)],
                       (U.status == UtxoStatus.RESERVED.value) & (U.reserved_by == from_batch), f"utxo:{u.outpoint}",
                       lambda old, o=u.outpoint: errors.Conflict(f"output {o} is no longer held by {from_batch}"))
                for u in utxos]

    def spend_items(self, utxos: Iterable[Utxo], batch_id: str) -> list[TxItem]:
        U = self._m.Utxo
        return [update(self._model(u.txid, u.vout), [U.status.set(UtxoStatus.SPENT.value)],
                       (U.status == UtxoStatus.RESERVED.value) & (U.reserved_by == batch_id), f"utxo:{u.outpoint}")
                for u in utxos]

    def get(self, txid: str, vout: int) -> Utxo | None:
        item = self._model(txid, vout)
        raw = self._client.get_item(TableName=self._m.table_name,
                                    Key={"pk": {"S": item.pk}, "sk": {"S": item.sk}}, ConsistentRead=True).get("Item")
        return None if raw is None else self._utxo(raw)

    def available(self) -> list[Utxo]:
        """Every AVAILABLE output (the coin selector's candidates)."""
        out: list[Utxo] = []
        for shard in range(UTXO_SHARDS):
            kwargs: dict[str, Any] = dict(
                TableName=self._m.table_name, KeyConditionExpression="pk = :pk", FilterExpression="#s = :a",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":pk": {"S": f"UTXO#{shard}"}, ":a": {"S": UtxoStatus.AVAILABLE.value}},
                ConsistentRead=True)
            out.extend(self._utxo(raw) for raw in all_items(self._client.query, **kwargs))
        return sorted(out, key=lambda u: (u.height, u.outpoint))

    def _utxo(self, raw: dict) -> Utxo:
        m = self._m.Utxo.from_raw_data(raw)
        return Utxo(txid=m.txid, vout=int(m.vout), value_sat=int(m.value_sat), script_pubkey_hex=m.script_pubkey_hex,
                    chain=int(m.chain), index=int(m.index), height=int(m.height), status=UtxoStatus(m.status),
                    reserved_by=m.reserved_by)

