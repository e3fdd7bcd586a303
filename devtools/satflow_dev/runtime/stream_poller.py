"""DynamoDB stream event sources: read each table stream a function subscribes to (`Type: DynamoDB`) and invoke
the handler with Lambda's stream batches, as the event source mapping does.

- Records come from moto's DynamoDB Streams API (DescribeStream, GetShardIterator, GetRecords); the event is
  Lambda's: `{"Records": [{eventID, eventName, eventVersion, eventSource "aws:dynamodb", awsRegion, dynamodb
  {ApproximateCreationDateTime (epoch seconds), Keys, NewImage, OldImage, SequenceNumber, SizeBytes,
  StreamViewType}, eventSourceARN}]}`.
- `FilterCriteria`: records that match no filter are skipped (and passed, as Lambda does). The pattern subset
  understood: nested objects, lists of allowed values (exact), `{"prefix": ...}`, `{"exists": bool}` and
  `{"anything-but": ...}`; anything else is refused at start rather than matched wrongly.
- Outcome: the handler raised -> the same batch again after `retry_interval_s` (until MaximumRetryAttempts,
  -1 = forever, then it is skipped with an error line); with ReportBatchItemFailures, a reported SequenceNumber
  is where the next batch starts (the records before it count as done). BisectBatchOnFunctionError is not
  imitated.
- Start: LATEST always (a local deviation when the template says TRIM_HORIZON): moto's state is process-wide, so
  a table reused by an earlier runtime in the same process carries records that are not this runtime's.

Two moto behaviours this works around (moto 5.2.5): a cancelled TransactWriteItems restores a deep copy of the
table, so an iterator taken before it keeps reading the discarded copy, which also holds the records the cancelled
transaction wrote. So every poll takes a fresh iterator after the last sequence number consumed, and an INSERT
that passes the filter is only delivered if its item exists (a cancelled transaction's "INSERT" does not).

Tests: `drain(function_or_table)` processes batches synchronously until nothing matching is left; build the
service with `background=False` to keep the background threads out of the way.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .resources import aws_client
from .template import REGION, FunctionSpec, StreamEvent, TableSpec, TemplateModel, TemplateError
from .workers import error_summary

if TYPE_CHECKING:
    from .invoker import FunctionInvoker
    from .local_runtime import LocalRuntime

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S = 0.2
DEFAULT_RETRY_INTERVAL_S = 1.0
_READ_LIMIT = 1000  # GetRecords' maximum


# ---------------------------------------------------------------------------------------------- filters


def check_pattern(pattern: Any, where: str = "pattern") -> None:
    """Raise TemplateError for pattern features the matcher below does not implement."""
    if isinstance(pattern, dict):
        for key, value in pattern.items():
            check_pattern(value, f"{where}.{key}")
        return
    if not isinstance(pattern, list):
        raise TemplateError(f"{where}: a filter value must be a list of allowed values or an object")
    for matcher in pattern:
        if isinstance(matcher, dict):
            if len(matcher) != 1 or next(iter(matcher)) not in ("prefix", "exists", "anything-but"):
                raise TemplateError(f"{where}: filter matcher {matcher} is not supported locally")


def _value_matches(matchers: list, present: bool, value: Any) -> bool:
    for matcher in matchers:
        if isinstance(matcher, dict):
            (op, arg), = matcher.items()
            if op == "exists" and bool(arg) == present:
                return True
            if not present:
                continue
            if op == "prefix" and isinstance(value, str) and value.startswith(arg):
                return True
            if op == "anything-but" and value not in (arg if isinstance(arg, list) else [arg]):
                return True
        elif present and value == matcher:
            return True
    return False


def matches_pattern(pattern: dict[str, Any], record: Any) -> bool:
    """Lambda event filtering over one record (the Lambda-shaped stream record)."""
    for key, expected in pattern.items():
        present = isinstance(record, dict) and key in record
        value = record.get(key) if present else None
        if isinstance(expected, dict):
            if not present or not matches_pattern(expected, value):
                return False
        elif not _value_matches(expected, present, value):
            return False
    return True


def passes_filters(patterns: Sequence[dict[str, Any]], record: dict[str, Any]) -> bool:
    return not patterns or any(matches_pattern(p, record) for p in patterns)


# ---------------------------------------------------------------------------------------------- records


def lambda_stream_record(raw: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record (boto3 shape) -> a Lambda DynamoDB stream record."""
    change = dict(raw.get("dynamodb") or {})
    created = change.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        change["ApproximateCreationDateTime"] = created.timestamp()
    return {
        "eventID": raw.get("eventID", ""),
        "eventName": raw.get("eventName", ""),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": raw.get("awsRegion") or REGION,
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    }


@dataclass(frozen=True)
class StreamSource:
    function: FunctionSpec
    event: StreamEvent
    table: TableSpec

    @property
    def label(self) -> str:
        return f"{self.function.logical_id}.{self.event.event_name}"


@dataclass
class StreamBatchResult:
    source: str
    sequence_numbers: list[str] = field(default_factory=list)
    failed_from: str | None = None  # where the next batch starts (a reported failure)
    response: Any = None
    error: str | None = None  # "ExceptionType: message" when the handler raised
    skipped: bool = False  # given up after MaximumRetryAttempts


def stream_sources(model: TemplateModel) -> list[StreamSource]:
    tables = {t.logical_id: t for t in model.tables}
    sources = []
    for fn in model.functions:
        for event in fn.stream_events:
            table = tables.get(event.table_logical_id)
            if table is None or not table.stream_view_type:
                log.warning("%s.%s reads the stream of %s, which has none: not polled", fn.logical_id,
                            event.event_name, event.table_logical_id)
                continue
            if not event.enabled:
                continue
            for pattern in event.filter_patterns:
                check_pattern(pattern, f"{fn.logical_id}.{event.event_name}")
            sources.append(StreamSource(fn, event, table))
    return sources


@dataclass
class _Cursor:
    last_sequence: str | None = None  # the last record consumed (None: before the first)
    failures: int = 0  # consecutive failed attempts of the batch starting after last_sequence


class StreamPoller:
    """The runtime's DynamoDB stream event source mappings (BackgroundService). One daemon thread per source."""

    name = "streams"

    def __init__(self, sources: Sequence[StreamSource], invoker: FunctionInvoker, moto_url: str, *,
                 poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
                 retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S, background: bool = True) -> None:
        self.sources = list(sources)
        self.invoker = invoker
        self.poll_interval_s = poll_interval_s
        self.retry_interval_s = retry_interval_s
        self.background = background
        self._dynamodb = aws_client("dynamodb", moto_url)
        self._streams = aws_client("dynamodbstreams", moto_url)
        self._cursors = {s.label: _Cursor() for s in self.sources}
        self._locks = {s.label: threading.Lock() for s in self.sources}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_runtime(cls, runtime: LocalRuntime, **kwargs: Any) -> StreamPoller | None:
        assert runtime.model is not None and runtime.invoker is not None
        sources = stream_sources(runtime.model)
        if not sources:
            return None
        interval = runtime.environ.get("SATFLOW_STREAM_POLL_INTERVAL_S")
        if interval and "poll_interval_s" not in kwargs:
            kwargs["poll_interval_s"] = float(interval)
        return cls(sources, runtime.invoker, runtime.moto_url, **kwargs)

    def describe(self) -> list[str]:
        lines = []
        for s in self.sources:
            filters = f", {len(s.event.filter_patterns)} filter(s)" if s.event.filter_patterns else ""
            lines.append(f"{s.function.logical_id} <- stream of {s.table.name}: batch {s.event.batch_size}{filters}"
                         + ("" if self.background else " [drain() only]"))
        return lines

    # -- lifecycle

    def start(self) -> None:
        for source in self.sources:
            self._skip_history(source)
        if not self.background:
            return
        for source in self.sources:
            thread = threading.Thread(target=self._run, args=(source,), name=f"stream-poller:{source.label}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def _run(self, source: StreamSource) -> None:
        while not self._stop.is_set():
            try:
                result = self.poll_once(source)
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("polling the stream of %s failed", source.table.name)
                result = None
            if result is None:
                self._stop.wait(self.poll_interval_s)
            elif result.error or result.failed_from:
                self._stop.wait(self.retry_interval_s)

    # -- reading

    def _stream_arn(self, source: StreamSource) -> str:
        return self._dynamodb.describe_table(TableName=source.table.name)["Table"]["LatestStreamArn"]

    def _read(self, source: StreamSource, after: str | None) -> tuple[str, list[dict[str, Any]]]:
        """(stream ARN, records after ``after``), from a fresh iterator (see the module docstring)."""
        arn = self._stream_arn(source)
        shards = self._streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        records: list[dict[str, Any]] = []
        for shard in shards:
            params: dict[str, Any] = {"StreamArn": arn, "ShardId": shard["ShardId"]}
            if after is None:
                params["ShardIteratorType"] = "TRIM_HORIZON"
            else:
                params.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=after)
            iterator = self._streams.get_shard_iterator(**params)["ShardIterator"]
            records.extend(self._streams.get_records(ShardIterator=iterator, Limit=_READ_LIMIT).get("Records") or [])
        records.sort(key=lambda r: int(r["dynamodb"]["SequenceNumber"]))
        return arn, records

    def _skip_history(self, source: StreamSource) -> None:
        cursor = self._cursors[source.label]
        while True:
            _, records = self._read(source, cursor.last_sequence)
            if not records:
                return
            cursor.last_sequence = records[-1]["dynamodb"]["SequenceNumber"]

    def _committed(self, source: StreamSource, record: dict[str, Any]) -> bool:
        if record["eventName"] != "INSERT":
            return True
        keys = record["dynamodb"].get("Keys") or {}
        item = self._dynamodb.get_item(TableName=source.table.name, Key=keys, ConsistentRead=True).get("Item")
        if item is None:
            log.debug("stream record %s: item gone (a cancelled transaction's record?); skipped",
                      record["dynamodb"].get("SequenceNumber"))
        return item is not None

    # -- one batch

    def poll_once(self, source: StreamSource) -> StreamBatchResult | None:
        """Invoke the function with the next batch of matching records; None when there is none."""
        with self._locks[source.label]:
            cursor = self._cursors[source.label]
            arn, records = self._read(source, cursor.last_sequence)
            batch: list[dict[str, Any]] = []
            consumed = cursor.last_sequence
            for raw in records:
                record = lambda_stream_record(raw, arn)
                if passes_filters(source.event.filter_patterns, record) and self._committed(source, record):
                    if len(batch) == max(1, source.event.batch_size):
                        break
                    batch.append(record)
                consumed = raw["dynamodb"]["SequenceNumber"]
            if not batch:
                cursor.last_sequence, cursor.failures = consumed, 0
                return None
            return self._process(source, cursor, batch, consumed)

    def _process(self, source: StreamSource, cursor: _Cursor, batch: list[dict[str, Any]],
                 consumed: str | None) -> StreamBatchResult:
        sequences = [r["dynamodb"]["SequenceNumber"] for r in batch]
        result = StreamBatchResult(source.label, sequence_numbers=sequences)
        try:
            result.response = self.invoker.invoke(source.function, {"Records": batch})
        except Exception as exc:
            result.error = error_summary(exc)
            return self._retry_or_skip(source, cursor, result, consumed)
        failed = self._first_failure(source, sequences, result.response)
        if failed is None:
            cursor.last_sequence, cursor.failures = consumed, 0
            return result
        result.failed_from = failed
        index = sequences.index(failed)
        if index > 0:  # the records before the failed one are done
            cursor.last_sequence, cursor.failures = sequences[index - 1], 0
        return self._retry_or_skip(source, cursor, result, consumed)

    def _retry_or_skip(self, source: StreamSource, cursor: _Cursor, result: StreamBatchResult,
                       consumed: str | None) -> StreamBatchResult:
        cursor.failures += 1
        limit = source.event.maximum_retry_attempts
        if 0 <= limit < cursor.failures:
            log.error("%s: batch %s failed %d times; skipped (MaximumRetryAttempts %d)", source.label,
                      result.sequence_numbers, cursor.failures, limit)
            cursor.last_sequence, cursor.failures = consumed, 0
            result.skipped = True
        else:
            log.warning("%s: batch failed (%s); retried", source.label, result.error or f"from {result.failed_from}")
        return result

    @staticmethod
    def _first_failure(source: StreamSource, sequences: list[str], response: Any) -> str | None:
        """The lowest reported SequenceNumber, or None when the batch succeeded."""
        if not source.event.report_batch_item_failures or not isinstance(response, dict):
            return None
        failures = response.get("batchItemFailures") or []
        reported = [f.get("itemIdentifier") for f in failures if isinstance(f, dict)]
        if not reported:
            return None
        if any(r not in sequences for r in reported):
            return sequences[0]  # an identifier not in the batch: the whole batch is retried, as Lambda does
        return min(reported, key=int)

    # -- for tests

    def source(self, name: str) -> StreamSource:
        for s in self.sources:
            if name in (s.function.logical_id, s.label, s.table.logical_id, s.table.name):
                return s
        raise KeyError(f"no stream event source {name!r} (known: {', '.join(s.label for s in self.sources)})")

    def drain(self, name: str, max_batches: int = 100) -> list[StreamBatchResult]:
        """Process batches synchronously until no matching record is left (or a batch failed, or
        ``max_batches``)."""
        source = self.source(name)
        results: list[StreamBatchResult] = []
        while len(results) < max_batches:
            result = self.poll_once(source)
            if result is None:
                break
            results.append(result)
            if (result.error or result.failed_from) and not result.skipped:
                break
        return results
