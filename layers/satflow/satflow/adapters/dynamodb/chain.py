"""Deposit addresses, the watched-address index, deposits and the chain monitor's tip on DynamoDB.

Items (pk / sk), declared here on ``models.BaseItem`` (models.py stays the shared contract):
  ADDRCOUNTER            / <chain>                 next_index (atomic ADD, ReturnValues UPDATED_NEW), committed, epoch
  ADDR#<script_hex>      / ADDR                    owner of a script: owner, chain, index, address (the monitor's
                                                   BatchGetItem key)
  ADDROWNER#<owner>      / <chain>#<index:010d>    the same record by owner
  ADDRPAGE               / <chain>#<page:06d>      index page: 8-byte prefixes of sha256(script) (a binary set,
                                                   ADDed atomically with the records above) and their count
  CHAINTIP               / TIP                     last processed block (height, hash), moved only conditionally
  CHAINBLOCK             / <height:010d>           the last REORG_WINDOW processed blocks and our outpoints in each
  DEPOSIT#<txid:vout>    / DEPOSIT                 a deposit (status, generation, confirmations, events)
  DEPLIST#<account_id>   / <first_seen_at>#<txid:vout>   per-account listing, newest first (written once)
  DEPWATCH               / <txid:vout>             deposits still in play (unconfirmed, confirming, or credited
                                                   below the final depth); deleted with the change that ends it

Hot items, by design: ``ADDRCOUNTER/<chain>`` and the newest ``ADDRPAGE`` of a chain take every allocation of that
chain (one item sustains ~1,000 writes/s; concurrent allocations may hit TransactionConflict, surfaced as
TransientError, and the retry takes a fresh index). A page append costs WCUs for the whole item (up to 40 KB: about
20 WCU on average per allocation); smaller pages would cost less per write and the same to read in full.
"""
from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Iterable, Iterator

from pynamodb.attributes import BinarySetAttribute, ListAttribute, MapAttribute, NumberAttribute, UnicodeAttribute

from satflow.domain import errors
from satflow.domain.address_index import AddressIndex, IndexPage, page_key, page_number, script_prefix
from satflow.domain.addresses import Chain, DepositAddressDeriver
from satflow.domain.bitcoin import Network
from satflow.domain.deposits import (
    REORG_WINDOW,
    AddressRecord,
    BlockRecord,
    ChainTip,
    ConfirmationStep,
    Deposit,
    DepositEvent,
    parse_outpoint,
)
from satflow.domain.ledger import is_system_owner
from satflow.domain.onchain import DepositStatus

from .batch import ItemRead
from .models import BaseItem, Models, key, model_meta
from .paging import all_items, decode_cursor, encode_cursor
from .transaction import TRANSIENT_CODES, TxItem, delete, put, transact, update

_BATCH_GET_LIMIT = 100
_UNPROCESSED_RETRIES = 8

# The warm index: one per table and counter epoch, kept across invocations of a container.
_INDEXES: dict[tuple, AddressIndex] = {}
_INDEX_LOCK = threading.Lock()


def forget_index_cache() -> None:
    """Drop every cached address index (tests; an operator tool after restoring a table)."""
    with _INDEX_LOCK:
        _INDEXES.clear()


class EventAttr(MapAttribute):
    type = UnicodeAttribute()
    confirmations = NumberAttribute()
    generation = NumberAttribute()
    at = UnicodeAttribute()
    height = NumberAttribute(null=True)


class ChainModels:
    """The pynamodb item classes of this store, bound to one table."""

    def __init__(self, table_name: str, region: str, host: str | None) -> None:
        def meta() -> type:
            return model_meta(table_name, region, host)

        class Address(BaseItem):
            Meta = meta()
            owner = UnicodeAttribute()
            address = UnicodeAttribute()
            script_pubkey_hex = UnicodeAttribute()
            chain = NumberAttribute()
            index = NumberAttribute()
            created_at = UnicodeAttribute()

        class Counter(BaseItem):
            Meta = meta()
            next_index = NumberAttribute(null=True)
            committed = NumberAttribute(null=True)
            epoch = UnicodeAttribute(null=True)

        class Page(BaseItem):
            Meta = meta()
            prefixes = BinarySetAttribute(legacy_encoding=False, null=True)
            count = NumberAttribute(null=True)

        class Tip(BaseItem):
            Meta = meta()
            height = NumberAttribute()
            hash = UnicodeAttribute()
            updated_at = UnicodeAttribute(null=True)

        class Block(BaseItem):
            Meta = meta()
            height = NumberAttribute()
            hash = UnicodeAttribute()
            prev_hash = UnicodeAttribute(null=True)
            deposits = ListAttribute(of=UnicodeAttribute, null=True)
            change = ListAttribute(of=UnicodeAttribute, null=True)

        class DepositItem(BaseItem):
            Meta = meta()
            txid = UnicodeAttribute()
            vout = NumberAttribute()
            account_id = UnicodeAttribute()
            amount_sat = NumberAttribute()
            address = UnicodeAttribute()
            script_pubkey_hex = UnicodeAttribute()
            chain = NumberAttribute()
            index = NumberAttribute()
            status = UnicodeAttribute()
            required_confirmations = NumberAttribute()
            generation = NumberAttribute()
            milestone = NumberAttribute()
            first_seen_at = UnicodeAttribute()
            updated_at = UnicodeAttribute()
            height = NumberAttribute(null=True)
            block_hash = UnicodeAttribute(null=True)
            credited_at = UnicodeAttribute(null=True)
            reversed_at = UnicodeAttribute(null=True)
            reversed_by = UnicodeAttribute(null=True)
            events = ListAttribute(of=EventAttr, null=True)

        class Pointer(BaseItem):
            Meta = meta()
            ref = UnicodeAttribute()

        self.Address, self.Counter, self.Page, self.Tip, self.Block = Address, Counter, Page, Tip, Block
        self.Deposit, self.Pointer = DepositItem, Pointer


_MODELS: dict[tuple, ChainModels] = {}


def chain_models(models: Models) -> ChainModels:
    meta = models.Account.Meta
    cache_key = (models.table_name, meta.region, getattr(meta, "host", None))
    if cache_key not in _MODELS:
        _MODELS[cache_key] = ChainModels(*cache_key)
    return _MODELS[cache_key]


class DynamoChainStore:
    """Everything the chain monitor and the deposit API persist. ``account_key``/``network`` are needed only to
    allocate addresses (deriving them); reads and the monitor work without them."""

    def __init__(self, client: Any, models: Models, *, account_key: str | None = None,
                 network: str | Network | None = None) -> None:
        self._client = client
        self._table = models.table_name
        self._m = chain_models(models)
        self._account_key = account_key
        self._network = network
        self._derivers: dict[tuple[str, Network], DepositAddressDeriver] = {}

    # ================================================================== addresses
    def allocate_address(self, owner: str, chain: int, *, account_key: str | None = None,
                         network: str | Network | None = None, at: str | None = None) -> tuple[int, str, str]:
        """Issue the next BIP84 address of ``chain`` to ``owner``: (index, address, script_pubkey_hex).

        The index comes from an atomic counter (every index is issued at most once); the owner records (by script
        and by owner), the index page append and the committed count are one transaction, and only then is the
        address returned. A failed transaction leaves a hole (an index never handed out), never a reused index.
        """
        chain = Chain(_validate_chain(chain))
        _validate_owner(owner, chain)
        deriver = self._deriver(account_key or self._account_key, network or self._network)
        index = self._next_index(chain)
        derived = deriver.derive(index, chain)
        M = self._m
        record = dict(owner=owner, address=derived.address, script_pubkey_hex=derived.script_pubkey_hex,
                      chain=int(chain), index=index, created_at=at or _iso_now())
        items = [
            put(M.Address(f"ADDR#{derived.script_pubkey_hex}", "ADDR", **record), M.Address.pk.does_not_exist(),
                "address"),
            put(M.Address(f"ADDROWNER#{owner}", f"{int(chain)}#{index:010d}", **record),
                M.Address.pk.does_not_exist(), "address_owner"),
            update(M.Page("ADDRPAGE", page_key(int(chain), page_number(index))),
                   [M.Page.prefixes.add({script_prefix(derived.script_pubkey_hex)}), M.Page.count.add(1)], None,
                   "address_page"),
            update(M.Counter("ADDRCOUNTER", str(int(chain))), [M.Counter.committed.add(1)], None, "address_counter"),
        ]
        failed = self.write(items)
        if failed:
            # Only a mis-configured key (another key's index space in this table) can collide on a script.
            raise errors.Conflict(f"address {derived.address} is already recorded ({sorted(failed)})")
        return index, derived.address, derived.script_pubkey_hex

    def _deriver(self, account_key: str | None, network: str | Network | None) -> DepositAddressDeriver:
        if not account_key or network is None:
            raise errors.ValidationError("allocating addresses needs the deposit account key and the network",
                                         field="deposit_account_key")
        net = network if isinstance(network, Network) else Network.from_name(network)
        cache_key = (account_key, net)
        if cache_key not in self._derivers:
            self._derivers[cache_key] = DepositAddressDeriver(account_key, net)
        return self._derivers[cache_key]

    def _next_index(self, chain: Chain) -> int:
        C = self._m.Counter
        counter = C("ADDRCOUNTER", str(int(chain)))
        params = counter.get_update_kwargs_from_instance(
            actions=[C.next_index.add(1), C.epoch.set(C.epoch | secrets.token_hex(8))], add_version_condition=False)
        params["ReturnValues"] = "UPDATED_NEW"
        response = self._call("update_item", **params)
        return int(response["Attributes"]["next_index"]["N"]) - 1

    def owners(self, scripts: Iterable[str]) -> dict[str, AddressRecord]:
        """Owner records of the given scripts (hex); scripts that are not ours are absent. BatchGetItem only."""
        keys = [key(f"ADDR#{script}", "ADDR") for script in dict.fromkeys(scripts)]
        records = (self._address(raw) for raw in self._batch_get(keys))
        return {record.script_pubkey_hex: record for record in records}

    def owner_read(self, script_pubkey_hex: str) -> ItemRead[AddressRecord | None]:
        """The owner record of one script (None: not ours), as one read of a batch (``batch.read_many``)."""
        return ItemRead(self._client, self._table, f"ADDR#{script_pubkey_hex}", "ADDR",
                        lambda raw: None if raw is None else self._address(raw))

    def addresses_of(self, owner: str, limit: int = 100) -> list[AddressRecord]:
        """An owner's addresses, oldest index first (receive chain before change)."""
        response = self._call("query", TableName=self._table, KeyConditionExpression="pk = :pk",
                              ExpressionAttributeValues={":pk": {"S": f"ADDROWNER#{owner}"}}, Limit=limit)
        return [self._address(raw) for raw in response.get("Items", [])]

    def _address(self, raw: dict) -> AddressRecord:
        a = self._m.Address.from_raw_data(raw)
        return AddressRecord(script_pubkey_hex=a.script_pubkey_hex, address=a.address, owner=a.owner,
                             chain=int(a.chain), index=int(a.index), created_at=a.created_at)

    # ================================================================== the address index
    def address_index(self) -> AddressIndex:
        """The warm index, refreshed when the counters moved: two item reads when nothing changed, plus the pages
        that are not full yet (normally one per chain) when something did; all pages on a cold start."""
        counters = self._counters()
        epochs = tuple(sorted((chain, epoch) for chain, (_, _, epoch) in counters.items()))
        version = tuple(sorted((chain, nxt, committed) for chain, (nxt, committed, _) in counters.items()))
        cache_key = (self._table, epochs)
        with _INDEX_LOCK:
            index = _INDEXES.get(cache_key)
            if index is None:  # a new table or new counters: start over (and forget older ones of this table)
                for old in [k for k in _INDEXES if k[0] == self._table]:
                    del _INDEXES[old]
                index = _INDEXES[cache_key] = AddressIndex()
            if index.version == version:
                return index
            stale = index.stale_pages({chain: nxt for chain, (nxt, _, _) in counters.items()})
            # Each page becomes a compact sorted array as its response arrives (no list of a million objects).
            pages = [self._page(raw) for raw in self._batch_get_iter([key("ADDRPAGE", k) for k in stale])]
            index.update(version, pages, stale)
            return index

    def _counters(self) -> dict[int, tuple[int, int, str]]:
        keys = [key("ADDRCOUNTER", str(int(chain))) for chain in Chain]
        out: dict[int, tuple[int, int, str]] = {}
        for raw in self._batch_get(keys):
            c = self._m.Counter.from_raw_data(raw)
            out[int(raw["sk"]["S"])] = (int(c.next_index or 0), int(c.committed or 0), c.epoch or "")
        return out

    @staticmethod
    def _page(raw: dict) -> IndexPage:
        prefixes = raw.get("prefixes", {}).get("BS", ())  # botocore has already base64-decoded them to bytes
        return IndexPage.of(raw["sk"]["S"], prefixes, int(raw.get("count", {}).get("N", "0")))

    # ================================================================== tip and block records
    def tip(self) -> ChainTip | None:
        raw = self._get("CHAINTIP", "TIP")
        return None if raw is None else ChainTip(int(raw["height"]["N"]), raw["hash"]["S"])

    def recent_blocks(self, limit: int = REORG_WINDOW) -> list[BlockRecord]:
        """The processed blocks we still keep, newest first."""
        response = self._call("query", TableName=self._table, KeyConditionExpression="pk = :pk",
                              ExpressionAttributeValues={":pk": {"S": "CHAINBLOCK"}}, ScanIndexForward=False,
                              Limit=limit, ConsistentRead=True)
        return [self._block(raw) for raw in response.get("Items", [])]

    def _block(self, raw: dict) -> BlockRecord:
        b = self._m.Block.from_raw_data(raw)
        return BlockRecord(height=int(b.height), hash=b.hash, prev_hash=b.prev_hash, deposits=tuple(b.deposits or ()),
                           change=tuple(b.change or ()))

    def init_tip(self, block: BlockRecord, at: str) -> bool:
        """The first run: start after ``block`` (recorded so a reorg below it can still be found)."""
        M = self._m
        items = [put(M.Tip("CHAINTIP", "TIP", height=block.height, hash=block.hash, updated_at=at),
                     M.Tip.pk.does_not_exist(), "tip"),
                 put(self._block_model(block), None, "block")]
        return not self.write(items)

    def connect_block(self, prev: ChainTip, block: BlockRecord, at: str) -> bool:
        """Move the tip from ``prev`` to ``block`` with its record. False when the tip is no longer ``prev``
        (another monitor run moved it): the caller stops."""
        M = self._m
        items = [
            update(M.Tip("CHAINTIP", "TIP"), [M.Tip.height.set(block.height), M.Tip.hash.set(block.hash),
                                               M.Tip.updated_at.set(at)],
                   M.Tip.hash == prev.hash, "tip"),
            put(self._block_model(block), None, "block"),
        ]
        if block.height - REORG_WINDOW >= 0:
            items.append(delete(M.Block("CHAINBLOCK", f"{block.height - REORG_WINDOW:010d}"), None, "old_block"))
        return not self.write(items)

    def disconnect_block(self, block: BlockRecord, new_tip: ChainTip, at: str) -> bool:
        M = self._m
        items = [
            update(M.Tip("CHAINTIP", "TIP"), [M.Tip.height.set(new_tip.height), M.Tip.hash.set(new_tip.hash),
                                               M.Tip.updated_at.set(at)],
                   M.Tip.hash == block.hash, "tip"),
            delete(M.Block("CHAINBLOCK", f"{block.height:010d}"), None, "block"),
        ]
        return not self.write(items)

    def _block_model(self, block: BlockRecord) -> Any:
        return self._m.Block("CHAINBLOCK", f"{block.height:010d}", height=block.height, hash=block.hash,
                             prev_hash=block.prev_hash, deposits=list(block.deposits) or None,
                             change=list(block.change) or None)

    # ================================================================== deposits
    def deposits(self, outpoints: Iterable[str]) -> dict[str, Deposit]:
        keys = [key(f"DEPOSIT#{outpoint}", "DEPOSIT") for outpoint in dict.fromkeys(outpoints)]
        found = (self._deposit(raw) for raw in self._batch_get(keys))
        return {d.outpoint: d for d in found}

    def get_deposit(self, outpoint: str) -> Deposit | None:
        raw = self._get(f"DEPOSIT#{outpoint}", "DEPOSIT")
        return None if raw is None else self._deposit(raw)

    def watched_deposits(self) -> list[Deposit]:
        """Deposits still in play (DEPWATCH pointers), read back in full."""
        outpoints = [raw["sk"]["S"] for raw in self._query_all("DEPWATCH")]
        found = self.deposits(outpoints)
        return [found[o] for o in outpoints if o in found]

    def new_deposit_items(self, d: Deposit) -> list[TxItem]:
        """A first sighting: the deposit, its listing entry and its watch pointer (joins the deposit_seen tx)."""
        M = self._m
        return [
            put(self._deposit_model(d), M.Deposit.pk.does_not_exist(), "deposit", _changed(d)),
            put(M.Pointer(f"DEPLIST#{d.account_id}", f"{d.first_seen_at}#{d.outpoint}", ref=d.outpoint), None,
                "deposit_list"),
            put(M.Pointer("DEPWATCH", d.outpoint, ref=d.outpoint), None, "deposit_watch"),
        ]

    def regenerate_items(self, old: Deposit, new: Deposit) -> list[TxItem]:
        """A REVERSED deposit seen again (rebroadcast or re-mined): the next generation, watched again."""
        D, P = self._m.Deposit, self._m.Pointer
        actions = [D.status.set(new.status.value), D.generation.set(new.generation), D.milestone.set(new.milestone),
                   D.required_confirmations.set(new.required_confirmations), D.updated_at.set(new.updated_at),
                   D.events.set(D.events.append([_event_attr(e) for e in new.events[len(old.events):]])),
                   D.credited_at.remove(), D.reversed_at.remove(), D.reversed_by.remove()]
        actions += _position_actions(D, new.height, new.block_hash)
        condition = (D.status == DepositStatus.REVERSED.value) & (D.generation == old.generation)
        return [update(D(f"DEPOSIT#{old.outpoint}", "DEPOSIT"), actions, condition, "deposit", _changed(old)),
                put(P("DEPWATCH", old.outpoint, ref=old.outpoint), None, "deposit_watch")]

    def confirm_items(self, d: Deposit, height: int, block_hash: str, at: str) -> list[TxItem]:
        """An unconfirmed deposit (mempool, or orphaned by a reorg) found in a block."""
        D = self._m.Deposit
        status = DepositStatus.CREDITED if d.status is DepositStatus.CREDITED else DepositStatus.CONFIRMING
        actions = [D.status.set(status.value), D.height.set(height), D.block_hash.set(block_hash),
                   D.updated_at.set(at)]
        condition = (D.generation == d.generation) & (D.status == d.status.value) & D.height.does_not_exist()
        return [update(D(f"DEPOSIT#{d.outpoint}", "DEPOSIT"), actions, condition, "deposit", _changed(d))]

    def orphan_items(self, d: Deposit, block_hash: str, event: DepositEvent) -> list[TxItem]:
        """Its block was disconnected: unconfirmed again (CONFIRMING -> SEEN; CREDITED stays until resolved)."""
        D = self._m.Deposit
        status = DepositStatus.CREDITED if d.status is DepositStatus.CREDITED else DepositStatus.SEEN
        actions = [D.status.set(status.value), D.height.remove(), D.block_hash.remove(), D.milestone.set(0),
                   D.updated_at.set(event.at), D.events.set(D.events.append([_event_attr(event)]))]
        condition = (D.generation == d.generation) & (D.block_hash == block_hash)
        items = [update(D(f"DEPOSIT#{d.outpoint}", "DEPOSIT"), actions, condition, "deposit", _changed(d))]
        if d.status is DepositStatus.CREDITED:  # final deposits left the watch list; an orphan must be resolved
            items.append(put(self._m.Pointer("DEPWATCH", d.outpoint, ref=d.outpoint), None, "deposit_watch"))
        return items

    def step_items(self, d: Deposit, step: ConfirmationStep, at: str) -> list[TxItem]:
        """Record a confirmation pass: milestone events, the credit (CONFIRMING -> CREDITED), the end of watching."""
        D = self._m.Deposit
        actions = [D.milestone.set(step.milestone), D.updated_at.set(at)]
        if step.events:
            actions.append(D.events.set(D.events.append([_event_attr(e) for e in step.events])))
        if step.credit:
            actions += [D.status.set(DepositStatus.CREDITED.value), D.credited_at.set(at)]
        condition = ((D.generation == d.generation) & (D.status == d.status.value) & (D.milestone == d.milestone)
                     & (D.block_hash == d.block_hash))
        items = [update(D(f"DEPOSIT#{d.outpoint}", "DEPOSIT"), actions, condition, "deposit", _changed(d))]
        if step.final:
            items.append(delete(self._m.Pointer("DEPWATCH", d.outpoint), None, "deposit_watch"))
        return items

    def close_items(self, d: Deposit, reversed_by: str, event: DepositEvent) -> list[TxItem]:
        """Unconfirmed and gone: REVERSED (``reversed_by`` names the void or the reversal transfer)."""
        D = self._m.Deposit
        actions = [D.status.set(DepositStatus.REVERSED.value), D.reversed_at.set(event.at),
                   D.reversed_by.set(reversed_by), D.updated_at.set(event.at),
                   D.events.set(D.events.append([_event_attr(event)]))]
        condition = (D.generation == d.generation) & (D.status == d.status.value) & D.height.does_not_exist()
        return [update(D(f"DEPOSIT#{d.outpoint}", "DEPOSIT"), actions, condition, "deposit", _changed(d)),
                delete(self._m.Pointer("DEPWATCH", d.outpoint), None, "deposit_watch")]

    def list_deposits(self, account_id: str, limit: int, cursor: str | None = None
                      ) -> tuple[list[Deposit], str | None]:
        """An account's deposits, newest first: one Query on the listing, one BatchGetItem for the records."""
        pk = f"DEPLIST#{account_id}"
        kwargs: dict[str, Any] = dict(TableName=self._table, KeyConditionExpression="pk = :pk",
                                      ExpressionAttributeValues={":pk": {"S": pk}}, ScanIndexForward=False,
                                      Limit=limit)
        if cursor:
            kwargs["ExclusiveStartKey"] = key(pk, decode_cursor(cursor, lambda sk: parse_outpoint(sk.rsplit("#", 1)[1])))
        response = self._call("query", **kwargs)
        outpoints = [raw["ref"]["S"] for raw in response.get("Items", [])]
        found = self.deposits(outpoints)
        last = response.get("LastEvaluatedKey")
        return [found[o] for o in outpoints if o in found], (encode_cursor(last["sk"]["S"]) if last else None)

    def _deposit_model(self, d: Deposit) -> Any:
        return self._m.Deposit(
            f"DEPOSIT#{d.outpoint}", "DEPOSIT", txid=d.txid, vout=d.vout, account_id=d.account_id,
            amount_sat=d.amount_sat, address=d.address, script_pubkey_hex=d.script_pubkey_hex, chain=d.chain,
            index=d.index, status=d.status.value, required_confirmations=d.required_confirmations,
            generation=d.generation, milestone=d.milestone, first_seen_at=d.first_seen_at, updated_at=d.updated_at,
            height=d.height, block_hash=d.block_hash, credited_at=d.credited_at, reversed_at=d.reversed_at,
            reversed_by=d.reversed_by, events=[_event_attr(e) for e in d.events])

    def _deposit(self, raw: dict) -> Deposit:
        m = self._m.Deposit.from_raw_data(raw)
        return Deposit(
            txid=m.txid, vout=int(m.vout), account_id=m.account_id, amount_sat=int(m.amount_sat), address=m.address,
            script_pubkey_hex=m.script_pubkey_hex, chain=int(m.chain), index=int(m.index),
            status=DepositStatus(m.status), required_confirmations=int(m.required_confirmations),
            first_seen_at=m.first_seen_at, updated_at=m.updated_at, generation=int(m.generation),
            height=None if m.height is None else int(m.height), block_hash=m.block_hash, milestone=int(m.milestone),
            credited_at=m.credited_at, reversed_at=m.reversed_at, reversed_by=m.reversed_by,
            events=tuple(DepositEvent(type=e.type, confirmations=int(e.confirmations), generation=int(e.generation),
                                      at=e.at, height=None if e.height is None else int(e.height))
                         for e in (m.events or ())))

    # ================================================================== plumbing
    def write(self, items: list[TxItem]) -> frozenset[str]:
        """One TransactWriteItems. Returns the tags whose condition failed (empty: written). Transient
        cancellations raise TransientError (the same write may be retried)."""
        cancellation = transact(self._client, items)
        if cancellation is None:
            return frozenset()
        if cancellation.first_transient():
            raise errors.TransientError(f"DynamoDB cancelled the write ({cancellation.first_transient()})")
        return frozenset(cancellation.failures)

    def _get(self, pk: str, sk: str) -> dict | None:
        return self._call("get_item", TableName=self._table, Key=key(pk, sk), ConsistentRead=True).get("Item")

    def _query_all(self, pk: str) -> Iterable[dict]:
        kwargs: dict[str, Any] = dict(TableName=self._table, KeyConditionExpression="pk = :pk",
                                      ExpressionAttributeValues={":pk": {"S": pk}}, ConsistentRead=True)
        return all_items(lambda **request: self._call("query", **request), **kwargs)

    def _batch_get(self, keys: list[dict]) -> list[dict]:
        return list(self._batch_get_iter(keys))

    def _batch_get_iter(self, keys: list[dict]) -> Iterator[dict]:
        """BatchGetItem in chunks of 100 keys, consistent reads, following UnprocessedKeys with a short backoff;
        items are yielded response by response."""
        for start in range(0, len(keys), _BATCH_GET_LIMIT):
            request = {self._table: {"Keys": keys[start:start + _BATCH_GET_LIMIT], "ConsistentRead": True}}
            for attempt in range(_UNPROCESSED_RETRIES):
                response = self._call("batch_get_item", RequestItems=request)
                yield from response.get("Responses", {}).get(self._table, [])
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(0.05 * 2 ** attempt, 1.0))
            else:
                raise errors.TransientError("DynamoDB left keys unprocessed; retry the scan")

    def _call(self, operation: str, **kwargs: Any) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in TRANSIENT_CODES or code == "ProvisionedThroughputExceededException":
                raise errors.TransientError(f"DynamoDB is busy ({code})") from exc
            raise
        except BotoCoreError as exc:
            raise errors.TransientError(f"DynamoDB unreachable: {type(exc).__name__}") from exc


# --- helpers -----------------------------------------------------------------------------------------------------
def _validate_chain(chain: object) -> int:
    if isinstance(chain, bool) or not isinstance(chain, int) or chain not in (0, 1):
        raise errors.ValidationError("chain must be 0 (receive) or 1 (change)", field="chain")
    return chain


def _validate_owner(owner: object, chain: Chain) -> None:
    if not isinstance(owner, str) or not owner or "#" in owner or len(owner) > 128:
        raise errors.ValidationError("owner must be an account id or a system account", field="owner")
    if chain is Chain.CHANGE and not is_system_owner(owner):
        raise errors.ValidationError("change addresses belong to a system account", field="owner")


def _position_actions(D: Any, height: int | None, block_hash: str | None) -> list:
    if height is None:
        return [D.height.remove(), D.block_hash.remove()]
    return [D.height.set(height), D.block_hash.set(block_hash)]


def _event_attr(e: DepositEvent) -> EventAttr:
    return EventAttr(type=e.type, confirmations=e.confirmations, generation=e.generation, at=e.at, height=e.height)


def _changed(d: Deposit):
    def on_fail(old: dict | None) -> errors.SatflowError:
        return errors.Conflict(f"deposit {d.outpoint} changed meanwhile", outpoint=d.outpoint)

    return on_fail


def _iso_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

