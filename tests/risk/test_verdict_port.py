"""Use cases do not import each other in circles: risk applies a verdict through the ``app.verdicts`` port that the
send use cases register, never by importing them (they import risk to assess their sends)."""
from __future__ import annotations

import ast
import pathlib

import pytest

import satflow.app.risk as risk_module
from satflow.app import verdicts
from satflow.domain.risk import SubjectKind

SEND_USE_CASES = {"payments", "payouts", "transfers"}


def _imported_app_modules(path: pathlib.Path) -> set[str]:
    """Every module of satflow.app that ``path`` imports, at top level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1 and not module:  # from . import x, y
                found.update(alias.name for alias in node.names)
            elif node.level == 1:  # from .x import y
                found.add(module.split(".")[0])
            elif module.startswith("satflow.app"):
                rest = module[len("satflow.app"):].lstrip(".")
                found.update({rest.split(".")[0]} if rest else {a.name for a in node.names})
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("satflow.app."):
                    found.add(alias.name.split(".")[2])
    return found


def test_risk_imports_no_send_use_case():
    imported = _imported_app_modules(pathlib.Path(risk_module.__file__))
    assert not imported & SEND_USE_CASES, imported & SEND_USE_CASES


def test_each_send_use_case_registers_its_verdict_applier():
    import satflow.app.payments  # noqa: F401
    import satflow.app.payouts  # noqa: F401
    import satflow.app.transfers  # noqa: F401

    assert set(verdicts._APPLIERS) == set(SubjectKind)


def test_a_verdict_without_an_applier_fails_loudly(monkeypatch):
    monkeypatch.setattr(verdicts, "_APPLIERS", {})
    with pytest.raises(RuntimeError, match="no risk verdict applier registered for payout"):
        verdicts.apply(None, SubjectKind.PAYOUT, "po_x", True, None, [])


def test_a_lazy_applier_imports_its_use_case_on_the_first_verdict(monkeypatch, tmp_path):
    (tmp_path / "lazy_send_use_case.py").write_text(
        "from satflow.app import verdicts\n"
        "from satflow.domain.risk import SubjectKind\n"
        "verdicts.register(SubjectKind.PAYOUT, lambda svc, s, proceed, reason, extra: f'applied {s} {proceed}')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(verdicts, "_APPLIERS", {})
    verdicts.register_lazy(SubjectKind.PAYOUT, "lazy_send_use_case")
    import sys

    assert "lazy_send_use_case" not in sys.modules  # nothing loaded at registration
    assert verdicts.apply(None, SubjectKind.PAYOUT, "po_1", True, None, []) == "applied po_1 True"
    assert verdicts.apply(None, SubjectKind.PAYOUT, "po_2", False, "RISK_REJECTED", []) == "applied po_2 False"
    monkeypatch.delitem(sys.modules, "lazy_send_use_case")
    verdicts.register_lazy(SubjectKind.PAYOUT, "satflow.app.payouts")  # already registered: kept
    assert verdicts.apply(None, SubjectKind.PAYOUT, "po_3", True, None, []) == "applied po_3 True"
