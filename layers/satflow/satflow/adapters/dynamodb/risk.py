"""Risk assessments, per-account destination history and reviews on DynamoDB.

Keys (pk / sk), declared here on ``models.BaseItem``:
  RISK#<subject_id>        / ASSESSMENT            the one assessment of a send (score, decision, factors, features)
  RISKDEST#<account_id>    / <kind>#<sha256[:32]>  a destination this account sent to (allowed or approved sends)
  REVIEW#<review_id>       / REVIEW                a held send: assessment, status, the workflow's task token
  REVIEWIDX#<status>       / <created_at>#<id>     reviews by status, oldest first (the admin queue)

The assessment item is written with ``attribute_not_exists``, in the same transaction as what the decision
causes (the transfer, the reserve, the review): a send is assessed once, and a replay reads the stored decision
instead of scoring again against a history that now contains the send itself.

A review goes ``pending -> approved | rejected`` exactly once (``status = pending`` condition, in one transaction
with its index entries and the admin's audit record). The task token is stored under the same condition, so
either the decision finds the token (and resumes the workflow) or the workflow finds the decision (and resumes
itself): no interleaving loses the wake-up.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

from pynamodb.attributes import NumberAttribute, UnicodeAttribute

from satflow.domain import errors
from satflow.domain.risk import (
    DestinationKind,
    Review,
    ReviewStatus,
    RiskAssessment,
    SubjectKind,
)

from .batch import ItemRead
from .models import BaseItem, Models, key, model_meta
from .paging import decode_cursor, encode_cursor
from .transaction import TxItem, delete, put, run_or_raise, update, update_if


@dataclass(frozen=True)
class StoredAssessment:
    kind: SubjectKind
    subject_id: str
    account_id: str
    assessment: RiskAssessment
    features: dict
    assessed_at: str
    review_id: str | None = None


class _RiskModels:
    def __init__(self, table_name: str, region: str, host: str | None) -> None:
        def meta() -> type:
            return model_meta(table_name, region, host)

        class AssessmentItem(BaseItem):
            Meta = meta()
            kind = UnicodeAttribute()
            subject_id = UnicodeAttribute()
            account_id = UnicodeAttribute()
            score = NumberAttribute()
            decision = UnicodeAttribute()
            body = UnicodeAttribute()  # JSON: assessment (factors) and features
            review_id = UnicodeAttribute(null=True)
            assessed_at = UnicodeAttribute()

        class DestinationItem(BaseItem):
            Meta = meta()
            first_at = UnicodeAttribute()

        class ReviewItem(BaseItem):
            Meta = meta()
            review_id = UnicodeAttribute()
            kind = UnicodeAttribute()
            subject_id = UnicodeAttribute()
            account_id = UnicodeAttribute()
            amount_msat = NumberAttribute()
            destination = UnicodeAttribute()
            body = UnicodeAttribute()  # JSON: the assessment
            status = UnicodeAttribute()
            created_at = UnicodeAttribute()
            task_token = UnicodeAttribute(null=True)
            decided_at = UnicodeAttribute(null=True)
            decided_by = UnicodeAttribute(null=True)
            note = UnicodeAttribute(null=True)

        class ReviewIndexItem(BaseItem):
            Meta = meta()
            ref = UnicodeAttribute()

        self.Assessment, self.Destination, self.Review, self.Index = (AssessmentItem, DestinationItem, ReviewItem,
                                                                       ReviewIndexItem)


_MODELS: dict[tuple, _RiskModels] = {}


def _risk_models(models: Models) -> _RiskModels:
    meta = models.Account.Meta
    cache_key = (models.table_name, meta.region, getattr(meta, "host", None))
    if cache_key not in _MODELS:
        _MODELS[cache_key] = _RiskModels(*cache_key)
    return _MODELS[cache_key]


def destination_sk(kind: DestinationKind, destination: str) -> str:
    """Hashed: the item says "this account sent there before" without keeping another copy of the address."""
    return f"{kind.value}#{hashlib.sha256(destination.encode()).hexdigest()[:32]}"


def _index_key(status: ReviewStatus, created_at: str, review_id: str) -> tuple[str, str]:
    return f"REVIEWIDX#{status.value}", f"{created_at}#{review_id}"


UNAPPLIED_PK = "REVIEWIDX#unapplied"


def _unapplied_key(decided_at: str, review_id: str) -> tuple[str, str]:
    return UNAPPLIED_PK, f"{decided_at}#{review_id}"


class DynamoRiskStore:
    def __init__(self, client: Any, models: Models) -> None:
        self._client = client
        self._table = models.table_name
        self._m = _risk_models(models)

    # ------------------------------------------------------------------ assessments
    def get_assessment(self, subject_id: str) -> StoredAssessment | None:
        return self.assessment_read(subject_id).get()

    def assessment_read(self, subject_id: str) -> ItemRead[StoredAssessment | None]:
        """The stored assessment of a send as one read of a batch."""
        return ItemRead(self._client, self._table, f"RISK#{subject_id}", "ASSESSMENT", self._assessment)

    def _assessment(self, raw: dict | None) -> StoredAssessment | None:
        if raw is None:
            return None
        m = self._m.Assessment.from_raw_data(raw)
        body = json.loads(m.body)
        return StoredAssessment(kind=SubjectKind(m.kind), subject_id=m.subject_id, account_id=m.account_id,
                                assessment=RiskAssessment.from_dict(body["assessment"]),
                                features=body.get("features", {}), assessed_at=m.assessed_at,
                                review_id=m.review_id)

    def assessment_item(self, stored: StoredAssessment) -> TxItem:
        """The assessment, once per send (tag ``risk_assessment``)."""
        A = self._m.Assessment
        a = stored.assessment
        item = A(f"RISK#{stored.subject_id}", "ASSESSMENT", kind=stored.kind.value, subject_id=stored.subject_id,
                 account_id=stored.account_id, score=a.score, decision=a.decision.value,
                 body=json.dumps({"assessment": a.to_dict(), "features": stored.features}, sort_keys=True,
                                 separators=(",", ":")),
                 review_id=stored.review_id, assessed_at=stored.assessed_at)
        return put(item, A.pk.does_not_exist(), "risk_assessment",
                   lambda old: errors.Conflict(f"{stored.subject_id} was already assessed"))

    # ------------------------------------------------------------------ destination history
    def destination_seen(self, account_id: str, kind: DestinationKind, destination: str) -> bool:
        return self.destination_read(account_id, kind, destination).get()

    def destination_read(self, account_id: str, kind: DestinationKind, destination: str) -> ItemRead[bool]:
        """Has this account sent there before? As one read of a batch."""
        return ItemRead(self._client, self._table, f"RISKDEST#{account_id}", destination_sk(kind, destination),
                        lambda raw: raw is not None)

    def destination_item(self, account_id: str, kind: DestinationKind, destination: str, at: str) -> TxItem:
        """Remember a destination (unconditional: writing it twice changes nothing that matters)."""
        D = self._m.Destination
        return put(D(f"RISKDEST#{account_id}", destination_sk(kind, destination), first_at=at), None,
                   "risk_destination")

    # ------------------------------------------------------------------ reviews
    def new_review_items(self, review: Review) -> list[TxItem]:
        R, I = self._m.Review, self._m.Index
        item = R(f"REVIEW#{review.review_id}", "REVIEW", review_id=review.review_id, kind=review.kind.value,
                 subject_id=review.subject_id, account_id=review.account_id, amount_msat=review.amount_msat,
                 destination=review.destination,
                 body=json.dumps(review.assessment.to_dict(), sort_keys=True, separators=(",", ":")),
                 status=review.status.value, created_at=review.created_at)
        return [
            put(item, R.pk.does_not_exist(), "review",
                lambda old: errors.Conflict(f"review {review.review_id} already exists")),
            put(I(*_index_key(review.status, review.created_at, review.review_id), ref=review.review_id), None,
                "review_index"),
        ]

    def get_review(self, review_id: str) -> Review | None:
        raw = self._get(f"REVIEW#{review_id}", "REVIEW")
        return None if raw is None else self._review(raw)

    def park(self, review_id: str, task_token: str) -> bool:
        """Store the waiting workflow's task token while the review is pending. False once it is decided (the
        caller then answers the token itself)."""
        R = self._m.Review
        return update_if(self._client, R(f"REVIEW#{review_id}", "REVIEW"), [R.task_token.set(task_token)],
                         R.pk.exists() & (R.status == ReviewStatus.PENDING.value))

    def decide_items(self, review: Review, status: ReviewStatus, decided_by: str, at: str,
                     note: str | None = None) -> list[TxItem]:
        """pending -> ``status`` exactly once, with the index moved along (for one transaction)."""
        R, I = self._m.Review, self._m.Index
        actions = [R.status.set(status.value), R.decided_at.set(at), R.decided_by.set(decided_by)]
        if note is not None:
            actions.append(R.note.set(note))

        def decided(old: dict | None) -> errors.SatflowError:
            if old is None:
                return errors.ReviewNotFound(f"review {review.review_id} not found")
            now = old.get("status", {}).get("S")
            return errors.ReviewAlreadyDecided(f"review {review.review_id} is already {now}",
                                               review_id=review.review_id, status=now)

        return [
            update(R(f"REVIEW#{review.review_id}", "REVIEW"), actions,
                   R.pk.exists() & (R.status == ReviewStatus.PENDING.value), "review", decided),
            delete(I(*_index_key(ReviewStatus.PENDING, review.created_at, review.review_id)), None,
                   "review_index_pending"),
            put(I(*_index_key(status, review.created_at, review.review_id), ref=review.review_id), None,
                "review_index"),
            # Until the decision is applied to its send (mark_applied), the review sweeper can find it.
            put(I(*_unapplied_key(at, review.review_id), ref=review.review_id), None, "review_index_unapplied"),
        ]

    def unapplied(self, decided_before: str, limit: int = 100) -> list[str]:
        """Ids of decided reviews whose decision was not yet applied to their send, decided before
        ``decided_before`` (ISO), oldest first."""
        pk = UNAPPLIED_PK
        resp = self._client.query(TableName=self._table, KeyConditionExpression="pk = :pk AND sk < :before",
                                  ExpressionAttributeValues={":pk": {"S": pk}, ":before": {"S": decided_before}},
                                  Limit=limit, ConsistentRead=True)
        return [raw["ref"]["S"] for raw in resp.get("Items", [])]

    def mark_applied(self, review: Review) -> None:
        """The decision reached its send (idempotent; a crash before this only makes the sweeper apply again)."""
        if review.decided_at is None:
            return
        self._client.delete_item(TableName=self._table, Key=key(*_unapplied_key(review.decided_at, review.review_id)))

    def list_reviews(self, status: ReviewStatus, limit: int, cursor: str | None = None
                     ) -> tuple[list[Review], str | None]:
        """Oldest first; ``cursor`` is the opaque position after the previous page."""
        pk = f"REVIEWIDX#{status.value}"
        request: dict[str, Any] = dict(TableName=self._table, KeyConditionExpression="pk = :pk",
                                       ExpressionAttributeValues={":pk": {"S": pk}}, Limit=limit,
                                       ConsistentRead=True)
        if cursor:
            request["ExclusiveStartKey"] = key(pk, decode_cursor(cursor))
        resp = self._client.query(**request)
        ids = [raw["ref"]["S"] for raw in resp.get("Items", [])]
        found = {r.review_id: r for r in self._get_reviews(ids)}
        last = resp.get("LastEvaluatedKey")
        return [found[i] for i in ids if i in found], (encode_cursor(last["sk"]["S"]) if last else None)

    def _get_reviews(self, ids: Sequence[str]) -> list[Review]:
        out: list[Review] = []
        for start in range(0, len(ids), 100):
            request = {self._table: {"Keys": [key(f"REVIEW#{i}", "REVIEW") for i in ids[start:start + 100]],
                                     "ConsistentRead": True}}
            while request:
                resp = self._client.batch_get_item(RequestItems=request)
                out.extend(self._review(raw) for raw in resp.get("Responses", {}).get(self._table, []))
                request = resp.get("UnprocessedKeys") or None
        return out

    def _review(self, raw: dict) -> Review:
        m = self._m.Review.from_raw_data(raw)
        return Review(review_id=m.review_id, kind=SubjectKind(m.kind), subject_id=m.subject_id,
                      account_id=m.account_id, amount_msat=int(m.amount_msat), destination=m.destination,
                      assessment=RiskAssessment.from_dict(json.loads(m.body)), status=ReviewStatus(m.status),
                      created_at=m.created_at, task_token=m.task_token, decided_at=m.decided_at,
                      decided_by=m.decided_by, note=m.note)

    # ------------------------------------------------------------------ running a transaction of our own
    def run(self, items: Sequence[TxItem]) -> None:
        """One TransactWriteItems without a ledger transfer: ``run_or_raise``."""
        run_or_raise(self._client, items)

    def _get(self, pk: str, sk: str) -> dict | None:
        return self._client.get_item(TableName=self._table, Key=key(pk, sk), ConsistentRead=True).get("Item")


__all__ = ["DynamoRiskStore", "StoredAssessment", "destination_sk"]
