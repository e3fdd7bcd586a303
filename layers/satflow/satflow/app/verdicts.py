"""The port through which a risk verdict reaches its send.

``risk.step_apply`` decides *whether* a held or refused send proceeds; what that means for the send (post or void a
transfer, release or fail a payment, queue or cancel a payout) belongs to the send's own use case. Each send's use
case registers its applier here when it is imported (``transfers``, ``payments``, ``payouts.request``), and a
process that applies verdicts imports the use cases it serves (or registers a lazy applier of its own, as the risk
function does for payouts). So ``risk`` depends on this port only, never on the use cases that depend on it.

An applier: ``(svc, subject_id, proceed, reason, extra) -> "PROCEED" | "DONE"``; ``reason`` is RISK_BLOCKED or
RISK_REJECTED when refused, ``extra`` the send's destination item (now seen) when it proceeds. Appliers are
idempotent: the verdict takes effect once however often it is applied.
"""
from __future__ import annotations

from typing import Any, Callable

from satflow.domain.risk import SubjectKind

ApplyVerdict = Callable[[Any, str, bool, "str | None", list], str]

_APPLIERS: dict[SubjectKind, ApplyVerdict] = {}


def register(kind: SubjectKind, applier: ApplyVerdict) -> None:
    _APPLIERS[kind] = applier


def register_lazy(kind: SubjectKind, module: str) -> None:
    """Register ``module`` (a send's use case, e.g. ``satflow.app.payouts``) to be imported on the first verdict of
    ``kind``: importing it registers its real applier, which then applies this verdict and all later ones. For
    processes that apply verdicts but should not load every send's use case at a cold start. A kind whose applier
    is already registered keeps it."""
    if kind in _APPLIERS:
        return

    def load_then_apply(svc: Any, subject_id: str, proceed: bool, reason: str | None, extra: list) -> str:
        import importlib

        importlib.import_module(module)
        if _APPLIERS.get(kind) is load_then_apply:
            raise RuntimeError(f"{module} did not register a risk verdict applier for {kind.value} sends")
        return apply(svc, kind, subject_id, proceed, reason, extra)

    _APPLIERS[kind] = load_then_apply


def apply(svc: Any, kind: SubjectKind, subject_id: str, proceed: bool, reason: str | None, extra: list) -> str:
    applier = _APPLIERS.get(kind)
    if applier is None:  # fail loudly: a verdict that silently went nowhere would leave the send held forever
        raise RuntimeError(f"no risk verdict applier registered for {kind.value} sends (import its use case)")
    return applier(svc, subject_id, proceed, reason, extra)


__all__ = ["ApplyVerdict", "register", "register_lazy", "apply"]
