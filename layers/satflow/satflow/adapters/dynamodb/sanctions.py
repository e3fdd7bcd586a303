"""The current sanctions list in the ledger table, replaced atomically, cached per container.

Items (one partition, so one Query reads a version):
  SANCTIONS / HEAD                                  the pointer: version, list_sha256, counts, chunk count and token,
                                                    loaded_at, checked_at, sources (JSON)
  SANCTIONS / CHUNK#<version:012d>#<token>#<i:05d>  ``data``: up to ``chunk_bytes`` (350 KB) of sorted destination
                                                    lines (``SanctionsList.lines()``)

Replacing (``store``): write every chunk of version v+1 under a fresh random token (``attribute_not_exists``), then
the head LAST with the condition ``version = v`` (``attribute_not_exists`` for the first list). A reader therefore
sees the old list or the new one, never a mix; two concurrent refreshes cannot both win (the loser deletes its
chunks and gets ``SanctionsListConflict``). After the flip, chunks of versions BELOW the new one are deleted
(never newer ones: a concurrent writer of v+2 may be writing them). A reader that read head v and then found
v's chunks gone or short (the flip and the cleanup happened between its two reads) checks the chunks against the
head's count and list digest, re-reads the head and tries again.

Reading (``current``): the parsed list is kept per store object (one per container); the head is re-read at most
every ``cache_s`` seconds (one GetItem) and the chunks only when the version changed. If DynamoDB cannot be read
while a list is cached, the cached list keeps screening (logged); with no list at all the caller decides
(fail closed by default: ``satflow.app.sanctions``).
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from satflow.domain import errors
from satflow.domain.sanctions import SanctionsHead, SanctionsList, SanctionsListConflict, SourceInfo

from .paging import all_items
from .transaction import TRANSIENT_CODES

log = logging.getLogger(__name__)

PK = "SANCTIONS"
HEAD_SK = "HEAD"
CHUNK_PREFIX = "CHUNK#"
DEFAULT_CHUNK_BYTES = 350_000  # DynamoDB items are at most 400 KB including names
_READ_ATTEMPTS = 3


@dataclass(frozen=True)
class LoadedSanctions:
    head: SanctionsHead
    list: SanctionsList


def chunk_sk(version: int, token: str, index: int) -> str:
    return f"{CHUNK_PREFIX}{version:012d}#{token}#{index:05d}"


def split_chunks(lines: list[str], chunk_bytes: int) -> list[str]:
    """Consecutive lines packed into chunks of at most ``chunk_bytes`` bytes (lines are ASCII)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if len(line) > chunk_bytes:
            raise ValueError("a sanctions line is longer than a chunk")
        if size + len(line) > chunk_bytes and current:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        chunks.append("".join(current))
    return chunks


class DynamoSanctionsStore:
    def __init__(self, client: Any, table_name: str, *, cache_s: float = 60.0,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, monotonic: Callable[[], float] = time.monotonic) -> None:
        if chunk_bytes < 200:
            raise ValueError("chunk_bytes is too small")
        self._client = client
        self._table = table_name
        self.cache_s = cache_s
        self.chunk_bytes = chunk_bytes
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: LoadedSanctions | None = None
        self._checked_at: float | None = None
        self.head_reads = 0  # observable for tests and logs: how often the cache went to DynamoDB
        self.chunk_loads = 0

    # ------------------------------------------------------------------ reads
    def head(self) -> SanctionsHead | None:
        """The current pointer (consistent read), or None before the first list."""
        self.head_reads += 1
        raw = self._call("get_item", TableName=self._table, Key=_key(HEAD_SK), ConsistentRead=True).get("Item")
        return None if raw is None else _head_from_raw(raw)

    def current(self) -> LoadedSanctions | None:
        """The list to screen against (cached; see the module docstring), or None when none was ever stored."""
        with self._lock:
            now = self._monotonic()
            if self._checked_at is not None and now - self._checked_at < self.cache_s:
                return self._cached
        # The refresh reads DynamoDB outside the lock: a thread waiting on the network must not hold up the others
        # (two threads refreshing at once read the list twice, harmlessly).
        try:
            loaded = self._refresh_cache()
        except errors.TransientError:
            cached = self._cached
            if cached is None:
                raise
            log.warning("sanctions list: DynamoDB unreadable; screening with cached version %s", cached.head.version)
            return cached
        with self._lock:
            self._cached, self._checked_at = loaded, now
        return loaded

    def invalidate(self) -> None:
        """Forget the cache (the next ``current`` reads DynamoDB)."""
        with self._lock:
            self._cached, self._checked_at = None, None

    def _refresh_cache(self) -> LoadedSanctions | None:
        for _ in range(_READ_ATTEMPTS):
            head = self.head()
            if head is None:
                return None
            if self._cached is not None and self._cached.head.version == head.version:
                return LoadedSanctions(head, self._cached.list)  # same list; the head's checked_at may be newer
            lst = self._load_chunks(head)
            if lst is not None:
                return LoadedSanctions(head, lst)
            # torn read: the list was replaced (and its chunks deleted) between our head read and chunk query
        raise errors.TransientError("the sanctions list is being replaced; retry")

    def _load_chunks(self, head: SanctionsHead) -> SanctionsList | None:
        self.chunk_loads += 1
        prefix = f"{CHUNK_PREFIX}{head.version:012d}#{head.chunk_token}#"
        items = list(all_items(self._client_call("query"), TableName=self._table, ConsistentRead=True,
                               KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
                               ExpressionAttributeValues={":pk": {"S": PK}, ":p": {"S": prefix}}))
        if len(items) != head.chunks:
            return None
        text = "".join(item["data"]["S"] for item in sorted(items, key=lambda i: i["sk"]["S"]))
        lst = SanctionsList.from_lines(text, head.sources)
        if lst.list_sha256 != head.list_sha256:
            return None
        return lst

    # ------------------------------------------------------------------ writes
    def store(self, lst: SanctionsList, *, expected_version: int, now: str) -> SanctionsHead:
        """Make ``lst`` the current list as version ``expected_version + 1`` (0 = no list stored yet)."""
        version = expected_version + 1
        token = secrets.token_hex(4)
        chunks = split_chunks(lst.lines(), self.chunk_bytes)
        head = SanctionsHead(version=version, list_sha256=lst.list_sha256, addresses=len(lst.addresses),
                             node_pubkeys=len(lst.node_pubkeys), chunks=len(chunks), chunk_token=token,
                             loaded_at=now, checked_at=now, sources=lst.sources)
        written: list[str] = []
        try:
            for index, data in enumerate(chunks):
                sk = chunk_sk(version, token, index)
                self._call("put_item", TableName=self._table, ConditionExpression="attribute_not_exists(pk)",
                           Item={**_key(sk), "data": {"S": data}, "version": {"N": str(version)}})
                written.append(sk)
            self._put_head(head, expected_version)
        except BaseException:
            self._delete_quietly(written)
            raise
        self._delete_older_than(version)
        with self._lock:  # this container screens with the new list at once
            self._cached, self._checked_at = LoadedSanctions(head, lst), self._monotonic()
        return head

    def touch(self, version: int, *, now: str, sources: tuple[SourceInfo, ...]) -> bool:
        """Record a check that found the same list (checked_at, the sources' new digests and dates). False if the
        list was replaced meanwhile."""
        from botocore.exceptions import ClientError

        try:
            self._client.update_item(
                TableName=self._table, Key=_key(HEAD_SK), ConditionExpression="version = :v",
                UpdateExpression="SET checked_at = :now, sources = :src",
                ExpressionAttributeValues={":v": {"N": str(version)}, ":now": {"S": now},
                                           ":src": {"S": _sources_json(sources)}})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise _transient_or(exc)
        return True

    def _put_head(self, head: SanctionsHead, expected_version: int) -> None:
        from botocore.exceptions import ClientError

        item = {**_key(HEAD_SK), "version": {"N": str(head.version)}, "list_sha256": {"S": head.list_sha256},
                "addresses": {"N": str(head.addresses)}, "node_pubkeys": {"N": str(head.node_pubkeys)},
                "chunks": {"N": str(head.chunks)}, "chunk_token": {"S": head.chunk_token},
                "loaded_at": {"S": head.loaded_at}, "checked_at": {"S": head.checked_at},
                "sources": {"S": _sources_json(head.sources)}}
        kwargs: dict[str, Any] = ({"ConditionExpression": "attribute_not_exists(pk)"} if expected_version == 0 else
                                  {"ConditionExpression": "version = :v",
                                   "ExpressionAttributeValues": {":v": {"N": str(expected_version)}}})
        try:
            self._client.put_item(TableName=self._table, Item=item, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise SanctionsListConflict(
                    f"the sanctions list moved past version {expected_version} meanwhile") from exc
            raise _transient_or(exc)

    def _delete_older_than(self, version: int) -> int:
        """Delete chunks of versions below ``version`` (the old list and chunks of refreshes that lost)."""
        deleted = 0
        stale = [item["sk"]["S"] for item in all_items(
            self._client_call("query"), TableName=self._table, ConsistentRead=True,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :p)", ProjectionExpression="pk, sk",
            ExpressionAttributeValues={":pk": {"S": PK}, ":p": {"S": CHUNK_PREFIX}})]
        for sk in stale:
            if int(sk[len(CHUNK_PREFIX):].split("#", 1)[0]) < version:
                self._call("delete_item", TableName=self._table, Key=_key(sk))
                deleted += 1
        return deleted

    def _delete_quietly(self, sks: list[str]) -> None:
        for sk in sks:
            try:
                self._client.delete_item(TableName=self._table, Key=_key(sk))
            except Exception:  # left behind: the next successful store deletes it (its version is older)
                log.warning("sanctions list: could not delete chunk %s", sk)

    # ------------------------------------------------------------------ helpers
    def _client_call(self, op: str) -> Callable[..., dict]:
        return lambda **kwargs: self._call(op, **kwargs)

    def _call(self, op: str, **kwargs: Any) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, op)(**kwargs)
        except ClientError as exc:
            raise _transient_or(exc)
        except BotoCoreError as exc:
            raise errors.TransientError(f"DynamoDB unreachable: {type(exc).__name__}") from exc


def _transient_or(exc: Exception) -> Exception:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    if code in TRANSIENT_CODES or code in ("ProvisionedThroughputExceededException", "ThrottlingException",
                                           "ServiceUnavailable", "InternalServerError", "RequestLimitExceeded"):
        error = errors.TransientError(f"DynamoDB is busy ({code}); retry")
        error.__cause__ = exc
        return error
    return exc


def _key(sk: str) -> dict:
    return {"pk": {"S": PK}, "sk": {"S": sk}}


def _sources_json(sources: tuple[SourceInfo, ...]) -> str:
    return json.dumps([s.to_dict() for s in sources], sort_keys=True, separators=(",", ":"))


def _head_from_raw(raw: dict) -> SanctionsHead:
    def n(name: str) -> int:
        return int(raw[name]["N"])

    def s(name: str) -> str:
        return raw[name]["S"]

    sources = tuple(SourceInfo.from_dict(d) for d in json.loads(raw.get("sources", {}).get("S", "[]")))
    return SanctionsHead(version=n("version"), list_sha256=s("list_sha256"), addresses=n("addresses"),
                         node_pubkeys=n("node_pubkeys"), chunks=n("chunks"), chunk_token=s("chunk_token"),
                         loaded_at=s("loaded_at"), checked_at=s("checked_at"), sources=sources)


__all__ = ["DynamoSanctionsStore", "LoadedSanctions", "SanctionsListConflict", "split_chunks", "chunk_sk"]
