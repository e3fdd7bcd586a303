#!/usr/bin/env python3
"""checkov's findings on template.yaml against the committed list of accepted ones (`make lint`).

    python infra/checkov_gate.py CHECKOV_JSON ACCEPTED_YAML

CHECKOV_JSON is `checkov -f template.yaml --framework cloudformation -o json`; ACCEPTED_YAML lists
`{check, resources, reason}` entries (resources: logical ids, or ["*"] for every resource the check flags).
Fails (exit 1) on a failed check that no entry accepts, and on an entry that accepts nothing any more (a fixed
finding must leave the list, or the list stops saying what is really accepted). An entry without a reason is an
error. Prints checkov's counts and the accepted findings.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def _logical_id(resource: str) -> str:
    return resource.rsplit(".", 1)[-1]  # "AWS::Serverless::Function.ApiFunction" -> "ApiFunction"


def load_accepted(path: Path) -> list[dict]:
    entries = yaml.safe_load(path.read_text()) or []
    for entry in entries:
        if not str(entry.get("reason") or "").strip():
            raise SystemExit(f"{path}: {entry.get('check')} has no reason")
        if not entry.get("check") or not entry.get("resources"):
            raise SystemExit(f"{path}: every entry needs check, resources and reason: {entry}")
    return entries


def gate(report: dict, accepted: list[dict]) -> tuple[list[str], list[str], list[str]]:
    """(unaccepted failures, stale acceptances, accepted findings) as printable lines."""
    used: set[int] = set()
    unaccepted, taken = [], []
    for failed in report["results"]["failed_checks"]:
        check, lid = failed["check_id"], _logical_id(failed["resource"])
        match = next((i for i, e in enumerate(accepted)
                      if e["check"] == check and ("*" in e["resources"] or lid in e["resources"])), None)
        line = f"{check} {lid}: {failed['check_name']}"
        if match is None:
            unaccepted.append(line)
        else:
            used.add(match)
            taken.append(line)
    stale = []
    for i, entry in enumerate(accepted):
        if i not in used:
            stale.append(f"{entry['check']} {entry['resources']}")
        elif "*" not in entry["resources"]:
            flagged = {_logical_id(f["resource"]) for f in report["results"]["failed_checks"]
                       if f["check_id"] == entry["check"]}
            stale += [f"{entry['check']} {lid}" for lid in entry["resources"] if lid not in flagged]
    return unaccepted, stale, taken


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    data = json.loads(Path(argv[0]).read_text())
    report = data[0] if isinstance(data, list) else data
    if "results" not in report:  # checkov found nothing to scan, or failed to parse
        raise SystemExit(f"checkov produced no results: {str(report)[:300]}")
    summary = report["summary"]
    unaccepted, stale, taken = gate(report, load_accepted(Path(argv[1])))
    print(f"checkov {summary.get('checkov_version')}: {summary['passed']} passed, {summary['failed']} failed "
          f"({len(taken)} accepted in {argv[1]}, {len(unaccepted)} not accepted), "
          f"{summary['resource_count']} resources")
    for line in unaccepted:
        print(f"  NOT ACCEPTED  {line}")
    for line in stale:
        print(f"  STALE ACCEPTANCE (nothing fails it any more; remove it)  {line}")
    return 1 if unaccepted or stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
