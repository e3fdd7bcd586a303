"""The local runtime: moto + resources from template.yaml + handlers in worker processes + the HTTP gateway +
services.

Start order: bind the HTTP port -> moto server -> resources -> process env + one warm worker per function ->
services -> serve HTTP -> write the admin key file. Stop runs it backwards and puts the process environment back (tests start runtimes
inside a pytest process).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .http_gateway import HttpGateway, RouteTable
from .invoker import InProcessInvoker
from .moto_server import LambdaInvokeResult, start_moto_server
from .resources import CreatedResources, create_resources
from .services import DEFAULT_SERVICE_FACTORIES, BackgroundService, ServiceFactory
from .template import STACK_NAME, FunctionSpec, TemplateModel, load_template
from .workers import ProcessInvoker

log = logging.getLogger(__name__)
_S = TypeVar("_S")

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
ADMIN_KEY_FILE = Path(".build") / "local-admin-key"  # relative to the template's directory; .build/ is gitignored
LOCAL_SANCTIONS_LIST = Path(__file__).resolve().parents[1] / "fixtures" / "sdn_local.xml"
# Template parameters whose deployed default cannot work here (no internet; a local list that blocks the
# simulators' sanctioned node and a regtest address). `--parameter` still wins.
LOCAL_PARAMETER_DEFAULTS = {"SanctionsListUrl": LOCAL_SANCTIONS_LIST.as_uri()}
SANCTIONS_JOB = {"job": "sanctions_refresh"}


class LocalRuntime:
    """One process running what template.yaml declares. `with LocalRuntime(port=0) as rt:` gives `rt.url`,
    `rt.moto_url` (for boto3 clients), `rt.admin_key`, `rt.invoker`, `rt.gateway` (for /_sim/ routes) and
    `rt.service(name)` (the started background services, see services.py)."""

    def __init__(
        self,
        template: str | Path = DEFAULT_TEMPLATE,
        *,
        host: str = "127.0.0.1",
        port: int = 3000,
        moto_port: int = 0,
        parameter_overrides: Mapping[str, str] | None = None,
        service_factories: Sequence[ServiceFactory] | None = None,
        write_admin_key_file: bool = True,
        environ: Mapping[str, str] | None = None,
        dynamodb: str = "moto",
        invocation: str = "process",
        stack_name: str = STACK_NAME,
    ) -> None:
        if dynamodb not in ("moto", "local"):
            raise ValueError("dynamodb must be 'moto' or 'local' (DynamoDB Local)")
        # "process": each function's environments are worker processes, one invocation at a time (workers.py).
        # "in-process": handlers imported into this process (invoker.py); only for tests that script a handler
        # module's state, never for concurrent HTTP clients.
        if invocation not in ("process", "in-process"):
            raise ValueError("invocation must be 'process' or 'in-process'")
        self.invocation = invocation
        # Prefix of every undeclared physical name (tables, queues, functions). Tests that start several runtimes
        # in one process give each its own (tests/runtime_http.fresh_stack_name): moto's state outlives a runtime,
        # so a shared table name would hand one runtime the last one's invoice cursor and chain tip.
        self.stack_name = stack_name
        self.dynamodb = dynamodb
        self.dynamodb_local: Any = None
        self.template_path = Path(template)
        self.host, self.port, self.moto_port = host, port, moto_port
        self.parameter_overrides = dict(parameter_overrides or {})
        self.service_factories = list(DEFAULT_SERVICE_FACTORIES if service_factories is None else service_factories)
        self.write_admin_key_file = write_admin_key_file
        self.environ = os.environ if environ is None else environ
        # Set by start():
        self.model: TemplateModel | None = None
        self.moto_url: str = ""
        self.resources: CreatedResources | None = None
        self.invoker: ProcessInvoker | InProcessInvoker | None = None
        self.gateway: HttpGateway | None = None
        self.services: list[BackgroundService] = []
        self._stops: list[Callable[[], None]] = []

    @property
    def url(self) -> str:
        assert self.gateway is not None, "start() first"
        return self.gateway.url

    @property
    def admin_key(self) -> str | None:
        return self.resources.admin_key if self.resources else None

    @property
    def admin_key_file(self) -> Path:
        return self.template_path.resolve().parent / ADMIN_KEY_FILE

    def start(self) -> LocalRuntime:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._refuse_account_shaped_admin_key()
        self.model = load_template(self.template_path, self.parameter_overrides, LOCAL_PARAMETER_DEFAULTS,
                                   stack_name=self.stack_name)
        # Bind the HTTP port before touching anything else: a second `make run` must fail without overwriting
        # the first one's admin key file or secret.
        self.gateway = HttpGateway(RouteTable(self.model.routes()), self._invoke, self.host, self.port)
        self._stops.append(self.gateway.stop)

        # moto hands Lambda Invoke calls (Step Functions tasks) to the invoker, which needs moto's URL: hence
        # the indirection through self.invoker.
        dynamodb_endpoint = None
        if self.dynamodb == "local":
            from satflow_dev.regtest.dynamodb_local import DynamoDBLocal

            self.dynamodb_local = DynamoDBLocal().start()
            self._stops.append(self.dynamodb_local.stop)
            dynamodb_endpoint = self.dynamodb_local.endpoint_url
        from .connections_api import ConnectionsEndpoint  # WebSocket @connections (issue 16)

        self.moto_url, stop_moto = start_moto_server(self.host, self.moto_port, lambda_invoker=self._lambda_api,
                                                     dynamodb_endpoint=dynamodb_endpoint,
                                                     connections_api=ConnectionsEndpoint(self))
        self._stops.append(stop_moto)
        self.resources = create_resources(self.model, self.moto_url, self.environ)

        # The runtime's own code (pollers, moto's Step Functions tasks) sees the shared AWS settings; with worker
        # processes each function additionally gets exactly its own environment.
        in_process = InProcessInvoker(self.model.functions, self.moto_url)
        self._stops.append(in_process.process_env.restore)
        in_process.prepare(warm=False)
        if self.invocation == "process":
            self.invoker = ProcessInvoker(self.model.functions, self.moto_url, environ={**os.environ, **self.environ})
            self._stops.append(self.invoker.stop)
        else:
            self.invoker = in_process
        self.invoker.prepare()
        self._load_sanctions_list()

        for factory in self.service_factories:
            service = factory(self)
            if service is None:
                continue
            service.start()
            self.services.append(service)
            self._stops.append(service.stop)
            log.info("started service %s", service.name)

        self.gateway.start()
        if self.admin_key and self.write_admin_key_file:
            self._write_admin_key(self.admin_key)
        self._book_opening_capital()

    def _book_opening_capital(self) -> None:
        """The solvency runbook's first step, done for the developer: the Lightning node's own funds (the
        simulator's channel balance, or the regtest master node's channels and wallet) are the operator's capital,
        booked with POST /v1/admin/solvency/capital. Without it the first solvency_check (5 minutes in) would
        see the whole node as drift and pause sends."""
        import json
        import urllib.request

        held = None
        try:
            for service in self.services:
                if service.name == "lightning":
                    sim = service.simulator  # type: ignore[attr-defined]
                    held = sim.our_balance_msat + sim.wallet_sat * 1000
                elif service.name == "regtest" and getattr(service, "stack", None) is not None:
                    with service.stack.master.client() as client:  # type: ignore[attr-defined]
                        held = client.node_balances().held_msat
            if not held or not self.admin_key:
                return
            body = json.dumps({"source": "lightning", "amount_msat": held, "direction": "in",
                               "reason": "local runtime: the node's funds at start"}).encode()
            request = urllib.request.Request(
                f"{self.url}/v1/admin/solvency/capital", data=body, method="POST",
                headers={"authorization": f"Bearer {self.admin_key}", "content-type": "application/json",
                         "idempotency-key": "local-runtime-opening-capital"})
            with urllib.request.urlopen(request, timeout=30) as response:
                log.info("opening capital booked: %s", response.read().decode()[:200])
        except Exception:  # a development convenience: never stop the runtime over it
            log.warning("could not book the node's opening capital; POST /v1/admin/solvency/capital by hand",
                        exc_info=True)

    def _refuse_account_shaped_admin_key(self) -> None:
        """Before anything starts: a SATFLOW_ADMIN_KEY with the account-key prefix would be printed as the admin
        key and then refused by every admin route (authentication treats sk_ tokens as account keys)."""
        chosen = self.environ.get("SATFLOW_ADMIN_KEY")
        if chosen:
            from satflow.app.accounts import check_admin_key

            try:
                check_admin_key(chosen)
            except RuntimeError as exc:  # AdminKeyMisconfigured: `make run` exits 1 with this message
                raise type(exc)(f"SATFLOW_ADMIN_KEY refused: {exc}") from None

    def _load_sanctions_list(self) -> None:
        """Run the sanctions refresh job once before serving: a deployed stack loads its list on schedule (and by
        an operator's invoke after the first deploy); here screening would otherwise fail closed for 6 hours."""
        assert self.model is not None and self.invoker is not None
        for fn in self.model.functions:
            if any(_json_or_none(s.input) == SANCTIONS_JOB for s in fn.schedules):
                result = self.invoker.invoke(fn, dict(SANCTIONS_JOB))
                log.info("sanctions list: %s", {k: result.get(k) for k in ("status", "version", "addresses",
                                                                           "node_pubkeys", "reason")})
                return

    def service(self, kind: str | type[_S]) -> _S:
        """A started service by name ("lightning", "chain", "webhooks", "sqs-poller", "streams", "schedules") or by
        class, e.g.
        `rt.service("lightning").simulator`, `rt.service("chain").simulator`,
        `rt.service(SqsPoller).drain("InvoiceEventsQueue")`."""
        for service in self.services:
            if (service.name == kind) if isinstance(kind, str) else isinstance(service, kind):
                return service  # type: ignore[return-value]
        started = ", ".join(s.name for s in self.services) or "none"
        raise KeyError(f"no started service {kind!r} (started: {started})")

    def _invoke(self, function: FunctionSpec, event: dict[str, Any]) -> Any:
        assert self.invoker is not None
        return self.invoker.invoke(function, event)

    def _lambda_api(self, name: str, payload: bytes, invocation_type: str) -> LambdaInvokeResult | None:
        if self.invoker is None:  # moto is up, the functions are not loaded yet
            return None
        return self.invoker.lambda_api(name, payload, invocation_type)

    def _write_admin_key(self, key: str) -> None:
        path = self.admin_key_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key + "\n")
        path.chmod(0o600)

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()  # no new requests first, although its port was bound first
        while self._stops:
            stop = self._stops.pop()
            try:
                stop()
            except Exception:
                log.exception("error while stopping the local runtime")
        self.services.clear()

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _json_or_none(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
