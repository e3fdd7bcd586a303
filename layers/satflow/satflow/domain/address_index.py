"""The watched-address index (pure): which scriptPubKeys are ours, answered in memory for a million addresses.

Every issued address (deposit or change) adds the 64-bit prefix of ``sha256(scriptPubKey)`` to a persisted *page*
(``PAGE_SIZE`` prefixes, one page per ``PAGE_SIZE`` consecutive indexes of one BIP84 chain), in the same transaction
that records the address's owner. The chain monitor loads the pages once per container and keeps a compact
matcher:

* pages that are full never change again: their prefixes live in one sorted ``array('Q')`` (8 bytes per address)
  searched with ``bisect`` inside a 2^16-bucket directory (a lookup is a handful of comparisons);
* pages still filling (normally just the newest of each chain) are a small ``set`` of ints, re-read whenever the
  index version (the per-chain committed counters) moves.

A hit is a *candidate*: the monitor confirms candidates with one BatchGetItem per block on the owner records, so a
prefix collision (probability ~ outputs x addresses / 2^64 per block, ~3e-10 for 6,000 outputs against a million
addresses) is filtered there and never becomes a deposit.
"""
from __future__ import annotations

import bisect
import hashlib
import heapq
import sys
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PREFIX_BYTES = 8
PAGE_SIZE = 5_000  # 40 KB of prefixes per page item (DynamoDB items are <= 400 KB); see page_key()
_BUCKET_BITS = 16


def script_prefix(script_pubkey: str | bytes) -> bytes:
    """The 8-byte index key of a scriptPubKey (hex or raw bytes)."""
    raw = bytes.fromhex(script_pubkey) if isinstance(script_pubkey, str) else script_pubkey
    return hashlib.sha256(raw).digest()[:PREFIX_BYTES]


def prefix_int(prefix: bytes) -> int:
    return int.from_bytes(prefix, "big")


def page_number(index: int) -> int:
    return index // PAGE_SIZE


def page_key(chain: int, number: int) -> str:
    """Sort key of a page item: ``<chain>#<page>`` (page = index // PAGE_SIZE)."""
    return f"{chain}#{number:06d}"


def pages_for(allocated: Mapping[int, int]) -> list[str]:
    """Every page key that can hold an issued index, given the next index to allocate per chain."""
    return [page_key(chain, n) for chain, nxt in sorted(allocated.items()) for n in range(-(-nxt // PAGE_SIZE))]


def sorted_prefix_array(prefixes: Iterable[bytes]) -> array:
    """8-byte big-endian prefixes -> a sorted array('Q') of their integer values (big-endian bytes sort as ints)."""
    ordered = sorted(prefixes)
    packed = array("Q")
    packed.frombytes(b"".join(ordered))
    if sys.byteorder == "little":
        packed.byteswap()
    return packed


class ScriptMatcher:
    """Membership of 64-bit script prefixes: a sorted array (sealed pages) plus a small set (pages filling)."""

    def __init__(self, sealed: array | None = None, tail: Iterable[int] = ()) -> None:
        self._sealed = sealed if sealed is not None else array("Q")
        self._tail = frozenset(tail)
        self._buckets = self._directory(self._sealed)

    @classmethod
    def from_prefixes(cls, prefixes: Iterable[bytes]) -> ScriptMatcher:
        return cls(sorted_prefix_array(prefixes))

    @staticmethod
    def _directory(sealed: array) -> array:
        """buckets[b] = first position whose top 16 bits are >= b (so bucket b spans buckets[b]:buckets[b+1])."""
        shift = 64 - _BUCKET_BITS
        return array("I", (bisect.bisect_left(sealed, bucket << shift) for bucket in range(1 << _BUCKET_BITS))
                     ) + array("I", [len(sealed)])

    @property
    def sealed(self) -> array:
        return self._sealed

    def __len__(self) -> int:
        return len(self._sealed) + len(self._tail)

    def contains_prefix(self, value: int) -> bool:
        if value in self._tail:
            return True
        bucket = value >> (64 - _BUCKET_BITS)
        lo, hi = self._buckets[bucket], self._buckets[bucket + 1]
        position = bisect.bisect_left(self._sealed, value, lo, hi)
        return position < hi and self._sealed[position] == value

    def might_own(self, script_pubkey_hex: str) -> bool:
        return self.contains_prefix(prefix_int(script_prefix(script_pubkey_hex)))

    def candidates(self, scripts: Iterable[str]) -> set[str]:
        """The scripts (hex) that may be ours; confirm them against the owner records. (The hot loop of a block
        scan: the prefix computation and the bucket lookup are inlined.)"""
        sha256, fromhex, frombytes = hashlib.sha256, bytes.fromhex, int.from_bytes
        tail, sealed, buckets, search = self._tail, self._sealed, self._buckets, bisect.bisect_left
        shift = 64 - _BUCKET_BITS
        found = set()
        for script in set(scripts):
            value = frombytes(sha256(fromhex(script)).digest()[:PREFIX_BYTES], "big")
            if value in tail:
                found.add(script)
                continue
            bucket = value >> shift
            hi = buckets[bucket + 1]
            position = search(sealed, value, buckets[bucket], hi)
            if position < hi and sealed[position] == value:
                found.add(script)
        return found

    @property
    def nbytes(self) -> int:
        """Approximate resident size: the arrays plus the tail set."""
        tail = sys.getsizeof(self._tail) + 32 * len(self._tail)
        return self._sealed.itemsize * len(self._sealed) + self._buckets.itemsize * len(self._buckets) + tail


@dataclass(frozen=True)
class IndexPage:
    key: str  # page_key(chain, number)
    values: array  # the page's prefixes as a sorted array('Q') (8 bytes each, whatever the page size)
    count: int  # committed allocations on this page (holes from failed allocations keep a page below PAGE_SIZE)

    @classmethod
    def of(cls, key: str, prefixes: Iterable[bytes], count: int) -> IndexPage:
        return cls(key, sorted_prefix_array(prefixes), count)

    @property
    def full(self) -> bool:
        return self.count >= PAGE_SIZE


class AddressIndex:
    """The matcher plus what is needed to refresh it incrementally.

    ``version`` is the tuple of per-chain (next index, committed count) read from the counters *before* the pages:
    every address committed before that read is in the pages read after it. A full page is merged into the sorted
    array once and never read again (only its key is remembered); partial pages (normally the newest of each chain)
    are re-read on every version change and kept as the tail set. Building from sorted pages with a k-way merge
    keeps the peak near twice the final array (no list of a million Python objects).
    """

    def __init__(self) -> None:
        self.version: tuple | None = None
        self._sealed: set[str] = set()
        self._partial: dict[str, array] = {}
        self.matcher = ScriptMatcher()

    def stale_pages(self, allocated: Mapping[int, int]) -> list[str]:
        """Pages to (re)read: every page that can hold an issued index and is not sealed yet."""
        return [key for key in pages_for(allocated) if key not in self._sealed]

    def update(self, version: tuple, pages: Iterable[IndexPage], read: Iterable[str]) -> None:
        """Apply freshly read ``pages`` (``read`` lists every key requested: a key without an item is empty)."""
        fetched = {page.key: page for page in pages}
        newly_full: list[array] = []
        for key in read:
            page = fetched.get(key)
            if page is not None and page.full:
                newly_full.append(page.values)
                self._sealed.add(key)
                self._partial.pop(key, None)
            else:
                self._partial[key] = page.values if page is not None else array("Q")
        sealed = self.matcher.sealed
        if newly_full:
            sealed = array("Q", heapq.merge(sealed, *newly_full))
        tail = {value for values in self._partial.values() for value in values}
        self.matcher = ScriptMatcher(sealed, tail)
        self.version = version

    def __len__(self) -> int:
        return len(self.matcher)
