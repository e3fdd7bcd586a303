"""SQS event sources: poll each queue a function subscribes to and invoke the handler with real SQS batches.

moto's own SQS -> Lambda mapping hands over one message at a time and ignores `batchItemFailures`, so the
runtime does what the Lambda event source mapping does:

- ReceiveMessage up to `BatchSize` messages (several receives of at most 10 when BatchSize > 10, within
  `MaximumBatchingWindowInSeconds`), with all system and message attributes. The queue's own VisibilityTimeout
  applies (Lambda does not override it either).
- The event is the one Lambda sends: `{"Records": [{messageId, receiptHandle, body, attributes
  (ApproximateReceiveCount, SentTimestamp, SenderId, ApproximateFirstReceiveTimestamp, FIFO ids), messageAttributes
  (stringValue / base64 binaryValue, dataType), md5OfBody, md5OfMessageAttributes?, eventSource "aws:sqs",
  eventSourceARN, awsRegion}]}`.
- Outcome, as Lambda decides it: the handler raised -> nothing is deleted. With `ReportBatchItemFailures`, the
  messages listed in `batchItemFailures` stay; a null/empty list or a null response means all succeeded; an
  itemIdentifier that is missing, empty or not in the batch, or a response that is not an object, fails the whole
  batch. Without it, a return deletes the whole batch.
- Failed messages become visible again after the queue's VisibilityTimeout; moto itself moves a message to the
  dead-letter queue on the receive after `maxReceiveCount` receives (checked with moto 5.2.5, so no redrive of
  our own here).

Polling uses WaitTimeSeconds=0 and sleeps between empty polls (`poll_interval_s`): moto's long poll would sleep
inside the one moto lock and stall every other AWS call of the process. Handlers run in this module's threads,
one batch at a time per event source (Lambda would run several batches concurrently; locally one keeps the order
readable). FIFO queues are received like standard ones (moto keeps a group's messages back while one is in flight).

Tests: `drain(queue)` processes batches synchronously until a receive comes back empty; build the service with
`background=False` (or call `pause()`) to keep the background threads out of the way.
"""
from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .resources import aws_client
from .template import REGION, FunctionSpec, QueueSpec, SqsEvent, TemplateModel
from .workers import error_summary

if TYPE_CHECKING:
    from .invoker import FunctionInvoker
    from .local_runtime import LocalRuntime

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S = 0.2
MAX_RECEIVE = 10  # SQS ReceiveMessage's MaxNumberOfMessages limit


@dataclass(frozen=True)
class SqsSource:
    """One SQS event of one function, with the queue it reads."""

    function: FunctionSpec
    event: SqsEvent
    queue: QueueSpec

    @property
    def label(self) -> str:
        return f"{self.function.logical_id}.{self.event.event_name}"


@dataclass
class BatchResult:
    """What happened to one batch: ids received, ids left for redelivery, ids deleted, and the handler's answer."""

    source: str  # "Function.Event"
    received: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    response: Any = None
    error: str | None = None  # "ExceptionType: message" when the handler raised


def sqs_sources(model: TemplateModel) -> list[SqsSource]:
    queues = {q.arn: q for q in model.queues}
    sources = []
    for fn in model.functions:
        for event in fn.sqs_events:
            queue = queues.get(event.queue_arn)
            if queue is None:
                log.warning("%s.%s reads %s, which the template does not declare: not polled",
                            fn.logical_id, event.event_name, event.queue_arn)
                continue
            if not event.enabled:
                log.info("%s.%s is disabled: not polled", fn.logical_id, event.event_name)
                continue
            sources.append(SqsSource(fn, event, queue))
    return sources


# ---------------------------------------------------------------------------------------------- the event


def lambda_sqs_record(message: dict[str, Any], queue: QueueSpec) -> dict[str, Any]:
    """One ReceiveMessage message (boto3 shape) -> one Lambda SQS record."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": {str(k): str(v) for k, v in (message.get("Attributes") or {}).items()},
        "messageAttributes": {name: _message_attribute(value)
                              for name, value in (message.get("MessageAttributes") or {}).items()},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue.arn,
        "awsRegion": REGION,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"stringListValues": [], "binaryListValues": [], "dataType": value.get("DataType", "String")}
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        raw = value["BinaryValue"]
        out["binaryValue"] = base64.b64encode(raw if isinstance(raw, bytes) else str(raw).encode()).decode()
    return out


def failed_message_ids(source: SqsSource, message_ids: Sequence[str], response: Any) -> tuple[list[str], str | None]:
    """Which messages stay in the queue after a handler *returned* `response` (see the module docstring)."""
    if not source.event.report_batch_item_failures:
        return [], None
    if response is None:
        return [], None
    if not isinstance(response, dict):
        return list(message_ids), f"response is a {type(response).__name__}, not an object: whole batch failed"
    failures = response.get("batchItemFailures")
    if not failures:  # absent, null or empty: complete success
        return [], None
    if not isinstance(failures, list):
        return list(message_ids), "batchItemFailures is not a list: whole batch failed"
    failed: list[str] = []
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or identifier not in message_ids:
            return list(message_ids), f"invalid batchItemFailures entry {item!r}: whole batch failed"
        if identifier not in failed:
            failed.append(identifier)
    return failed, None


# ---------------------------------------------------------------------------------------------- the service


class SqsPoller:
    """The runtime's SQS event source mappings (BackgroundService). One daemon thread per event source."""

    name = "sqs-poller"

    def __init__(
        self,
        sources: Sequence[SqsSource],
        invoker: FunctionInvoker,
        moto_url: str,
        *,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        background: bool = True,
    ) -> None:
        self.sources = list(sources)
        self.invoker = invoker
        self.moto_url = moto_url
        self.poll_interval_s = poll_interval_s
        self.background = background
        self._client = aws_client("sqs", moto_url)  # boto3 clients are thread-safe once created
        self._queue_urls: dict[str, str] = {}
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._threads: list[threading.Thread] = []
        self._source_locks = {s.label: threading.Lock() for s in self.sources}

    @classmethod
    def from_runtime(cls, runtime: LocalRuntime, **kwargs: Any) -> SqsPoller | None:
        assert runtime.model is not None and runtime.invoker is not None
        sources = sqs_sources(runtime.model)
        if not sources:
            return None
        interval = runtime.environ.get("SATFLOW_SQS_POLL_INTERVAL_S")
        if interval and "poll_interval_s" not in kwargs:
            kwargs["poll_interval_s"] = float(interval)
        return cls(sources, runtime.invoker, runtime.moto_url, **kwargs)

    def describe(self) -> list[str]:
        lines = []
        for s in self.sources:
            flags = ", ReportBatchItemFailures" if s.event.report_batch_item_failures else ""
            dlq = ""
            if "RedrivePolicy" in s.queue.attributes:
                dlq = " (with a dead-letter queue)"
            lines.append(f"{s.function.logical_id} <- SQS {s.queue.name}{dlq}: batch {s.event.batch_size}{flags}"
                         + ("" if self.background else " [drain() only]"))
        return lines

    # -- lifecycle

    def start(self) -> None:
        for source in self.sources:
            self._queue_url(source)  # fail at start when the queue is missing
        if not self.background:
            return
        for source in self.sources:
            thread = threading.Thread(target=self._run, args=(source,), name=f"sqs-poller:{source.label}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._resume.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def pause(self) -> None:
        """Background threads stop receiving (after the batch in hand); drain() still works."""
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def _run(self, source: SqsSource) -> None:
        while not self._stop.is_set():
            self._resume.wait()
            if self._stop.is_set():
                return
            try:
                result = self.poll_once(source)
            except Exception:  # moto going away at shutdown, a queue deleted by hand: keep the thread alive
                if self._stop.is_set():
                    return
                log.exception("polling %s failed", source.queue.name)
                result = None
            if result is None:
                self._stop.wait(self.poll_interval_s)

    # -- one batch

    def poll_once(self, source: SqsSource) -> BatchResult | None:
        """Receive one batch for `source` and process it; None when the queue had nothing visible."""
        with self._source_locks[source.label]:
            messages = self._receive(source)
            if not messages:
                return None
            return self._process(source, messages)

    def _queue_url(self, source: SqsSource) -> str:
        url = self._queue_urls.get(source.queue.name)
        if url is None:
            url = self._client.get_queue_url(QueueName=source.queue.name)["QueueUrl"]
            self._queue_urls[source.queue.name] = url
        return url

    def _receive(self, source: SqsSource) -> list[dict[str, Any]]:
        url = self._queue_url(source)
        wanted = max(1, source.event.batch_size)
        window_end = time.monotonic() + source.event.batching_window_s
        messages: list[dict[str, Any]] = []
        while len(messages) < wanted:
            response = self._client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(MAX_RECEIVE, wanted - len(messages)),
                WaitTimeSeconds=0,  # never long-poll: moto would sleep holding the moto lock
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            got = response.get("Messages") or []
            messages.extend(got)
            if len(messages) >= wanted or self._stop.is_set():
                break
            if not got or len(got) < MAX_RECEIVE:
                if time.monotonic() >= window_end or not messages:
                    break
                time.sleep(min(self.poll_interval_s, max(0.0, window_end - time.monotonic())))
        return messages

    def _process(self, source: SqsSource, messages: list[dict[str, Any]]) -> BatchResult:
        ids = [m["MessageId"] for m in messages]
        result = BatchResult(source.label, received=list(ids))
        event = {"Records": [lambda_sqs_record(m, source.queue) for m in messages]}
        try:
            result.response = self.invoker.invoke(source.function, event)
        except Exception as exc:  # Lambda: the whole batch returns to the queue
            result.error = error_summary(exc)
            result.failed = list(ids)
            log.warning("%s raised on a batch of %d from %s (%s); all stay in the queue", source.function.logical_id,
                        len(ids), source.queue.name, result.error, exc_info=log.isEnabledFor(logging.DEBUG))
            return result
        result.failed, problem = failed_message_ids(source, ids, result.response)
        if problem:
            result.error = problem
            log.warning("%s on %s: %s", source.function.logical_id, source.queue.name, problem)
        to_delete = [m for m in messages if m["MessageId"] not in result.failed]
        result.deleted = self._delete(source, to_delete)
        if result.failed:
            log.info("%s: %d of %d messages from %s failed; they return after the visibility timeout",
                     source.function.logical_id, len(result.failed), len(ids), source.queue.name)
        else:
            log.info("%s: batch of %d from %s done", source.function.logical_id, len(ids), source.queue.name)
        return result

    def _delete(self, source: SqsSource, messages: list[dict[str, Any]]) -> list[str]:
        deleted: list[str] = []
        url = self._queue_url(source)
        for start in range(0, len(messages), MAX_RECEIVE):
            chunk = messages[start:start + MAX_RECEIVE]
            response = self._client.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            ok = {entry["Id"] for entry in response.get("Successful") or []}
            for failure in response.get("Failed") or []:
                log.warning("could not delete a message from %s: %s", source.queue.name, failure)
            deleted.extend(m["MessageId"] for i, m in enumerate(chunk) if str(i) in ok)
        return deleted

    # -- for tests

    def source(self, queue: str) -> list[SqsSource]:
        """Event sources reading `queue`: a queue logical id, queue name, or the reading function's logical id."""
        found = [s for s in self.sources
                 if queue in (s.queue.logical_id, s.queue.name, s.function.logical_id, s.label)]
        if not found:
            known = sorted({s.queue.logical_id for s in self.sources})
            raise KeyError(f"no SQS event source reads {queue!r} (known queues: {', '.join(known)})")
        return found

    def drain(self, queue_logical_id: str, max_batches: int = 100) -> list[BatchResult]:
        """Process batches from the queue synchronously until a receive finds nothing visible (or `max_batches`).

        Messages that failed stay invisible for the queue's VisibilityTimeout, so a drain does not loop on them;
        drain again after that time to see their redelivery (or their move to the dead-letter queue).
        """
        sources = self.source(queue_logical_id)
        results: list[BatchResult] = []
        idle = 0
        index = 0
        while len(results) < max_batches and idle < len(sources):
            source = sources[index % len(sources)]  # several functions on one queue compete, as in AWS
            index += 1
            result = self.poll_once(source)
            if result is None:
                idle += 1
                continue
            idle = 0
            results.append(result)
        return results
