"""Hash-chained audit records (pure: no I/O).

Every money mutation and every admin action writes one :class:`PendingEntry` in its own transaction, without
reading anything (no chain head on the write path). A single writer per chain, the sealer, later appends pending
entries to their chain IN ORDER as :class:`AuditRecord`: record ``seq`` n carries ``prev_hash`` = the hash of
record n-1 (the first record of a chain carries :data:`GENESIS_HASH`). There are N independent chains (shards).

``hash = sha256(canonical JSON of every field except hash)``, the canonical JSON being sorted keys, no whitespace,
ASCII escapes, integers only (a float anywhere is refused). ``seq``, ``shard`` and ``prev_hash`` are inside the
hashed content, so an altered record, a removed one and a reordered pair each break the chain, and
:func:`verify_chain` tells which. A pending entry older than the seal bound is the fifth problem, ``unsealed``
(see docs/audit.md for the design and the threat model).

Which chain: :func:`audit_shard` hashes the record's *chain key* (its first subject id, else its actor) into
``0..shards-1``; ledger records are spread by transfer id instead (app.recorded_ledger).
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Literal, Mapping

from .errors import ValidationError
from .ledger import Transfer, shard_for
from .money import BTC

GENESIS_HASH = "0" * 64
RECORD_VERSION = 2  # 2: the record names its pending entry (entry_id, written_at); version 1 records still verify
SYSTEM_ACTOR, ADMIN_ACTOR = "system", "admin"

MAX_DETAILS_BYTES = 2048
MAX_SUBJECTS = 8
MAX_ID_CHARS = 200
_INT_LIMIT = 2**63 - 1
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")

# "unsealed" (an entry older than the seal bound) and "truncated" (the head below the highest seq ever sealed) are
# found by the verify use case, not by verify_chain.
Problem = Literal["altered", "missing", "reordered", "broken_link", "unsealed", "truncated"]


# ------------------------------------------------------------------------------------------------ records
@dataclass(frozen=True)
class AuditEntry:
    """What a caller records: everything except the chain fields (shard, seq, prev_hash, hash).

    ``actor``: an account id (``acc_...``), ``"admin"`` or ``"system"``. ``action``: dotted lower case, e.g.
    ``transfer.internal``, ``adjustment.credit``, ``payment.reserved``, ``account.created``, ``account.updated``.
    ``subject_ids``: the ids the record is about; the FIRST is the chain key (normally an account id).
    ``details``: a small JSON object (str keys; str/int/bool/null/list/object values; no floats; <= 2 KB).
    """

    at: str
    actor: str
    action: str
    subject_ids: tuple[str, ...] = ()
    amount_msat: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "subject_ids", tuple(self.subject_ids))
        object.__setattr__(self, "details", dict(self.details))
        validate_entry(self)

    @property
    def chain_key(self) -> str:
        return self.subject_ids[0] if self.subject_ids else self.actor


@dataclass(frozen=True)
class AuditRecord:
    """A chained record. Built by :func:`chain_record`; read back from storage without validation (a tampered
    record must still be representable so that :func:`verify_chain` can report it)."""

    shard: int
    seq: int
    at: str
    actor: str
    action: str
    subject_ids: tuple[str, ...]
    amount_msat: int | None
    details: Mapping[str, Any]
    prev_hash: str
    hash: str
    version: int = RECORD_VERSION
    entry_id: str = ""  # v2: the pending entry sealed here (a ledger record's is its transfer id)
    written_at: str = ""  # v2: the wall clock when the entry was written with its mutation

    def hashed_fields(self) -> dict[str, Any]:
        """Every field except ``hash``: exactly what the hash covers."""
        fields = {
            "v": self.version, "shard": self.shard, "seq": self.seq, "at": self.at, "actor": self.actor,
            "action": self.action, "subject_ids": list(self.subject_ids), "amount_msat": self.amount_msat,
            "details": dict(self.details) if isinstance(self.details, Mapping) else self.details,
            "prev_hash": self.prev_hash,
        }
        if self.version != 1:
            fields.update(entry_id=self.entry_id, written_at=self.written_at)
        return fields

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of GET /v1/admin/audit."""
        return {**self.hashed_fields(), "hash": self.hash}


@dataclass(frozen=True)
class PendingEntry:
    """An audit entry as written in its mutation's transaction: on its chain (``shard``) but not yet at a
    position. ``entry_id`` is unique to the mutation (a ledger transfer's id; a fresh ``aud_`` id for an admin
    action); ``written_at`` is the writer's wall clock (UTC ISO, µs), the sort key of the chain's unsealed index.
    ``entry_hash`` covers everything else, so the sealer can tell an entry changed after it was written. Read back
    without validation (a tampered entry must still be representable)."""

    shard: int
    entry_id: str
    written_at: str
    at: str
    actor: str
    action: str
    subject_ids: tuple[str, ...]
    amount_msat: int | None
    details: Mapping[str, Any]
    entry_hash: str = ""

    def hashed_fields(self) -> dict[str, Any]:
        return {
            "shard": self.shard, "entry_id": self.entry_id, "written_at": self.written_at, "at": self.at,
            "actor": self.actor, "action": self.action, "subject_ids": list(self.subject_ids),
            "amount_msat": self.amount_msat,
            "details": dict(self.details) if isinstance(self.details, Mapping) else self.details,
        }

    def intact(self) -> bool:
        try:
            return self.entry_hash == pending_hash(self)
        except (ValueError, TypeError):
            return False


def pending_entry(entry: AuditEntry, *, shard: int, entry_id: str, written_at: str) -> PendingEntry:
    """What ``entry`` is written as, on chain ``shard``, by the mutation's own transaction."""
    if isinstance(shard, bool) or not isinstance(shard, int) or shard < 0:
        raise ValueError("shard must be a non-negative integer")
    if not _short_text(entry_id):
        raise ValueError("entry_id must be a non-empty id of at most 200 characters")
    if not _short_text(written_at):
        raise ValueError("written_at must be a timestamp string")
    unhashed = PendingEntry(shard=shard, entry_id=entry_id, written_at=written_at, at=entry.at, actor=entry.actor,
                            action=entry.action, subject_ids=entry.subject_ids, amount_msat=entry.amount_msat,
                            details=dict(entry.details))
    return replace(unhashed, entry_hash=pending_hash(unhashed))


def pending_hash(p: PendingEntry) -> str:
    return hashlib.sha256(canonical_json(p.hashed_fields()).encode("ascii")).hexdigest()


def seal_record(p: PendingEntry, *, seq: int, prev_hash: str) -> AuditRecord:
    """The record pending entry ``p`` becomes at position ``seq`` of its chain after a record hashing to
    ``prev_hash``. The content is taken as given: the sealer passes the entry as committed (the stream image)."""
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError("seq must be a positive integer")
    if not isinstance(prev_hash, str) or not _HASH_RE.match(prev_hash):
        raise ValueError("prev_hash must be 64 lower-case hex digits")
    unhashed = AuditRecord(shard=p.shard, seq=seq, at=p.at, actor=p.actor, action=p.action,
                           subject_ids=tuple(p.subject_ids), amount_msat=p.amount_msat, details=p.details,
                           prev_hash=prev_hash, hash="", entry_id=p.entry_id, written_at=p.written_at)
    return replace(unhashed, hash=record_hash(unhashed))


def is_sealed_form(record: AuditRecord, p: PendingEntry) -> bool:
    """Whether ``record`` is exactly what ``p`` (an intact entry) became when sealed: a self-consistent version-2
    record on the same chain under the same entry id, whose content hashes to ``p.entry_hash``. A seal marker is
    only believed when its record passes this: entry ids are predictable (a deposit's txid:vout, a payment hash),
    so a marker made in advance, or a forged entry sealed first, must never pass for the genuine entry's seal."""
    if record.version == 1 or record.entry_id != p.entry_id or record.shard != p.shard:
        return False
    as_entry = PendingEntry(shard=record.shard, entry_id=record.entry_id, written_at=record.written_at,
                            at=record.at, actor=record.actor, action=record.action,
                            subject_ids=tuple(record.subject_ids), amount_msat=record.amount_msat,
                            details=record.details)
    try:
        return pending_hash(as_entry) == p.entry_hash and record_hash(record) == record.hash
    except (ValueError, TypeError):
        return False


@dataclass(frozen=True)
class Checkpoint:
    """How far a chain is verified: record ``seq`` hashes to ``hash``. ``problem``/``first_bad_seq``: the last
    verdict (None while intact). ``version``: an optimistic lock, so concurrent verifiers never move it back."""

    seq: int = 0
    hash: str = GENESIS_HASH
    verified_at: str | None = None
    problem: str | None = None
    first_bad_seq: int | None = None
    version: int = 0


def iso_us(epoch_s: float) -> str:
    """UTC ISO-8601 with microseconds (sorts as it reads): the unsealed index's time key, fine enough that one
    process's successive writes never share a tick."""
    return datetime.fromtimestamp(epoch_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_of(iso: str) -> float | None:
    try:
        return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, ASCII only, integers only. Raises ValueError on floats, NaN, non-str keys,
    bytes or other non-JSON values: a record that cannot be encoded canonically cannot be hashed."""
    _check_json(value, depth=0)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def record_hash(record: AuditRecord) -> str:
    return hashlib.sha256(canonical_json(record.hashed_fields()).encode("ascii")).hexdigest()


def chain_record(entry: AuditEntry, *, shard: int, seq: int, prev_hash: str) -> AuditRecord:
    """(Version 1, kept for the chain tests and old records.) The record ``entry`` becomes at position ``seq`` of chain ``shard`` after a record hashing to ``prev_hash``."""
    if isinstance(shard, bool) or not isinstance(shard, int) or shard < 0:
        raise ValueError("shard must be a non-negative integer")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError("seq must be a positive integer")
    if not isinstance(prev_hash, str) or not _HASH_RE.match(prev_hash):
        raise ValueError("prev_hash must be 64 lower-case hex digits")
    unhashed = AuditRecord(shard=shard, seq=seq, at=entry.at, actor=entry.actor, action=entry.action,
                           subject_ids=entry.subject_ids, amount_msat=entry.amount_msat, details=dict(entry.details),
                           prev_hash=prev_hash, hash="", version=1)
    return replace(unhashed, hash=record_hash(unhashed))


def audit_shard(entry: AuditEntry, shards: int) -> int:
    """The chain of ``entry``: sha256 of its chain key (first subject id, else actor) mod ``shards``.

    Deterministic, so one account's records stay ordered in one chain; spread, so no chain head is hot. The shard
    count may only grow (readers walk shards 0..N-1); growing it moves some accounts to a new chain from then on,
    each chain staying verifiable on its own."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    return shard_for(entry.chain_key, shards)


def transfer_entry(t: Transfer, *, actor: str, action: str, at: str | None = None,
                   details: Mapping[str, Any] | None = None) -> AuditEntry:
    """The usual entry for a ledger transfer: subjects = (the user side, the other side, the transfer id); the
    user side is the debit owner unless it is a system account. ``amount_msat`` only for the BTC asset (msat)."""
    primary, other = (t.debit, t.credit) if not t.debit.is_system or t.credit.is_system else (t.credit, t.debit)
    base: dict[str, Any] = {"template": t.template, "kind": t.kind.value, "asset": t.asset}
    if t.asset != BTC:
        base["amount"] = t.amount
    if t.pending_id:
        base["pending_id"] = t.pending_id
    return AuditEntry(at=at or t.created_at, actor=actor, action=action,
                      subject_ids=(primary.owner, other.owner, t.id),
                      amount_msat=t.amount if t.asset == BTC else None, details={**base, **(details or {})})


def validate_entry(entry: AuditEntry) -> None:
    def bad(message: str, name: str) -> ValidationError:
        return ValidationError(f"audit {name}: {message}", field=name)

    if not _short_text(entry.at):
        raise bad("must be a timestamp string", "at")
    if not _short_text(entry.actor) or not (
            entry.actor in (ADMIN_ACTOR, SYSTEM_ACTOR) or entry.actor.startswith("acc_")):
        raise bad("must be an account id, 'admin' or 'system'", "actor")
    if not isinstance(entry.action, str) or len(entry.action) > 64 or not _ACTION_RE.match(entry.action):
        raise bad("must be dotted lower case, e.g. transfer.internal", "action")
    if len(entry.subject_ids) > MAX_SUBJECTS or not all(_short_text(s) for s in entry.subject_ids):
        raise bad(f"at most {MAX_SUBJECTS} non-empty ids", "subject_ids")
    amount = entry.amount_msat
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= _INT_LIMIT):
        raise bad("must be a non-negative integer or null", "amount_msat")
    try:
        encoded = canonical_json(entry.details)
    except ValueError as exc:
        raise bad(str(exc), "details") from exc
    if len(encoded) > MAX_DETAILS_BYTES:
        raise bad(f"larger than {MAX_DETAILS_BYTES} bytes", "details")


def _short_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and _utf8(value)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _check_json(value: Any, depth: int) -> None:
    if depth > 8:
        raise ValueError("nested too deeply")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -_INT_LIMIT <= value <= _INT_LIMIT:
            raise ValueError("integer out of range")
        return
    if isinstance(value, str):
        if not _utf8(value):
            raise ValueError("strings must be valid Unicode")
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            _check_json(v, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or not _utf8(k):
                raise ValueError("object keys must be strings")
            _check_json(v, depth + 1)
        return
    raise ValueError(f"{type(value).__name__} is not allowed (integers, strings, booleans, null, lists, objects)")


def backoff_s(attempt: int) -> float:
    """Retry delay before attempt ``attempt + 1`` (a sealer's moved chain head, a throttled or conflicting
    transaction): full jitter, 20 ms doubling, <= 400 ms."""
    return random.uniform(0, min(0.02 * 2 ** (attempt - 1), 0.4))


# ------------------------------------------------------------------------------------------------ verification
@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    first_bad_seq: int | None = None
    problem: Problem | None = None
    checked: int = 0  # records examined before the verdict
    last_seq: int = 0  # the last good seq (the chain's length when ok)
    last_hash: str = GENESIS_HASH  # the hash of record last_seq: with it, a checkpoint to verify onwards from

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "first_bad_seq": self.first_bad_seq, "problem": self.problem,
                "checked": self.checked, "last_seq": self.last_seq}


def verify_chain(records: Iterable[AuditRecord], *, head: tuple[int, str] | None = None, start_seq: int = 1,
                 start_hash: str = GENESIS_HASH) -> VerifyReport:
    """Check records given in storage order (ascending position) against each other and, when given, against the
    chain head ``(seq, hash)``. Streams: O(1) memory on success; on the first problem it reads the rest to name it.

    Problems, reported for the earliest bad position:
      * ``reordered``   - a record sits at another position than its own: its seq is out of order (a later record
                          holds the seq expected here), or its content hashes correctly only under another seq;
      * ``missing``     - a seq is absent (a gap, or records the head counts but storage lacks: a deleted last);
      * ``altered``     - the content does not hash to the stored hash (or cannot be encoded canonically);
      * ``broken_link`` - the record is self-consistent but its prev_hash is not its predecessor's hash (a record
                          forged with a recomputed hash), or the head disagrees with the last record.
    ``start_seq``/``start_hash`` verify a suffix from a trusted checkpoint.
    """
    it: Iterator[AuditRecord] = iter(records)
    expected, prev_hash, checked = start_seq, start_hash, 0

    def fail(problem: Problem, seq: int) -> VerifyReport:
        return VerifyReport(False, seq, problem, checked, expected - 1, prev_hash)

    for r in it:
        checked += 1
        if isinstance(r.seq, bool) or not isinstance(r.seq, int):
            return fail("altered", expected)
        seq = r.seq
        if seq != expected:
            rest = [x.seq for x in it]  # consumed only on failure
            if seq < expected or expected in rest:
                return fail("reordered", expected)
            return fail("missing", expected)
        if not _self_consistent(r):
            rest_seqs = [x.seq for x in it]
            top = max([s for s in rest_seqs if isinstance(s, int)] + [seq, head[0] if head else 0])
            if any(_self_consistent(replace(r, seq=s)) for s in range(start_seq, top + 1) if s != seq):
                return fail("reordered", seq)
            return fail("altered", seq)
        if r.prev_hash != prev_hash:
            return fail("broken_link", seq)
        prev_hash, expected = r.hash, expected + 1

    last = expected - 1
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last:
            return fail("missing", last + 1)  # the head counts records that storage no longer has
        if head_seq < last:
            return fail("broken_link", head_seq + 1)  # records beyond the head: never written by append
        if head_hash != prev_hash:
            return fail("broken_link", last)
    return VerifyReport(True, None, None, checked, last, prev_hash)


def _self_consistent(r: AuditRecord) -> bool:
    try:
        return isinstance(r.hash, str) and record_hash(r) == r.hash
    except (ValueError, TypeError):
        return False


__all__ = ["AuditEntry", "AuditRecord", "PendingEntry", "VerifyReport", "Checkpoint", "iso_us", "epoch_of", "GENESIS_HASH", "ADMIN_ACTOR",
           "SYSTEM_ACTOR", "canonical_json", "record_hash", "pending_hash", "pending_entry", "seal_record", "is_sealed_form", "backoff_s",
           "chain_record", "audit_shard", "transfer_entry", "verify_chain", "validate_entry"]
