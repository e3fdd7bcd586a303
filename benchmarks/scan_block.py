"""Matching one block's outputs against a million watched scripts: the chain monitor's compact index (a sorted
array of 64-bit prefixes of sha256(scriptPubKey) plus a bucket directory, built from index pages) against a plain
Python set of the script hex strings, in the same run. Printed figures, not a pass/fail test.

Both sides start from what they would load from DynamoDB (index pages of 8-byte prefixes / the scripts as hex), so
build time and memory are the in-memory structure only (the fetch is not measured). Scan = every output of the
block checked (the index side includes hashing each output script and yields candidates that the monitor then
confirms with one BatchGetItem). Memory: tracemalloc, retained after the build and peak during it.

Usage: python benchmarks/scan_block.py [--watched 1000000] [--txs 3000] [--outputs 2] [--hits 5] [--repeat 15]
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import random
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable

from satflow.domain import address_index as ai
from satflow.domain.address_index import AddressIndex, IndexPage, page_key


def _scripts(rng: random.Random, n: int) -> list[bytes]:
    return [b"\x00\x14" + rng.randbytes(20) for _ in range(n)]  # p2wpkh scriptPubKeys


def _pages(scripts: list[bytes]) -> list[tuple[str, list[bytes]]]:
    """What the index pages hold: PAGE_SIZE prefixes each (the allocation wrote them one by one)."""
    size = ai.PAGE_SIZE
    return [(page_key(0, start // size), [hashlib.sha256(s).digest()[:8] for s in scripts[start:start + size]])
            for start in range(0, len(scripts), size)]


def _measure(build: Callable[[], Any]) -> tuple[Any, float, int, int]:
    """(result, build seconds without tracing, retained bytes, peak bytes while building)."""
    gc.collect()
    started = time.perf_counter()
    result = build()
    seconds = time.perf_counter() - started
    del result
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = build()
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, seconds, current - before, peak - before


def _median_ms(scan: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, found = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        found = scan()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watched", type=int, default=1_000_000)
    parser.add_argument("--txs", type=int, default=3_000)
    parser.add_argument("--outputs", type=int, default=2, help="outputs per transaction")
    parser.add_argument("--hits", type=int, default=5, help="outputs paying watched scripts")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    watched = _scripts(rng, args.watched)
    pages = _pages(watched)
    watched_hex = [s.hex() for s in watched]
    block = [s.hex() for s in _scripts(rng, args.txs * args.outputs - args.hits)]
    hits = rng.sample(watched_hex, args.hits)
    block[:0] = hits
    rng.shuffle(block)

    def build_index() -> AddressIndex:
        index = AddressIndex()
        keys = [key for key, _ in pages]
        index.update(("bench",), (IndexPage.of(key, prefixes, len(prefixes)) for key, prefixes in pages), keys)
        return index

    def build_set() -> set[str]:
        return {bytes(s).hex() for s in watched}  # fresh strings: the set owns what it holds

    index, index_build_s, index_bytes, index_peak = _measure(build_index)
    baseline, set_build_s, set_bytes, set_peak = _measure(build_set)
    index_ms, candidates = _median_ms(lambda: index.matcher.candidates(block), args.repeat)
    set_ms, found = _median_ms(lambda: {s for s in block if s in baseline}, args.repeat)
    assert candidates >= set(hits) and found == set(hits), "both must find exactly the hits"

    outputs = len(block)
    print(f"python {sys.version.split()[0]}; {args.watched:,} watched scripts; block of {args.txs:,} transactions x "
          f"{args.outputs} outputs = {outputs:,} outputs, {args.hits} hits; page size {ai.PAGE_SIZE:,}; "
          f"scan = median of {args.repeat}")
    header = f"{'':28}{'build s':>10}{'scan ms':>10}{'retained MB':>13}{'peak MB':>10}{'candidates':>12}"
    print(header)
    print(f"{'compact index (array Q)':28}{index_build_s:>10.2f}{index_ms:>10.2f}{index_bytes / 1e6:>13.1f}"
          f"{index_peak / 1e6:>10.1f}{len(candidates):>12}")
    print(f"{'plain set of script hex':28}{set_build_s:>10.2f}{set_ms:>10.2f}{set_bytes / 1e6:>13.1f}"
          f"{set_peak / 1e6:>10.1f}{len(found):>12}")
    print(f"ratio index/set: build {index_build_s / set_build_s:.2f}x, scan {index_ms / set_ms:.2f}x, "
          f"retained memory {index_bytes / set_bytes:.3f}x ({set_bytes / index_bytes:.1f}x smaller), "
          f"peak {index_peak / set_peak:.2f}x")
    print(f"bytes per watched script: index {index_bytes / args.watched:.1f}, set {set_bytes / args.watched:.1f}")


if __name__ == "__main__":
    main()
