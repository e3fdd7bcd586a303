"""Test helpers for the audit log: entries are written with their mutation and sealed into chains afterwards (by the
sealer function from the stream, or the sweeper). Tests that assert chain contents or order seal first."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any


def _services(svc_or_store: Any) -> Any:
    return svc_or_store if hasattr(svc_or_store, "audit") else SimpleNamespace(audit=svc_or_store)


def seal_all(svc_or_store: Any) -> int:
    """Seal every pending entry of every chain now (the sweeper with no grace). Returns how many were sealed."""
    from satflow.app.audit import sweep

    report = sweep(_services(svc_or_store), grace_s=0)
    assert not report.failed and not report.broken_shards, report
    return report.sealed


def sealed_records(svc_or_store: Any, limit: int = 1000) -> list:
    """Seal what is pending, then every chain's records in chain order (shard, seq)."""
    seal_all(svc_or_store)
    store = _services(svc_or_store).audit
    return [r for shard in range(store.shards) for r in store.records(shard, 0, limit)]
