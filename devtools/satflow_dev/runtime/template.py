"""template.yaml -> a small typed model of what the local runtime wires up.

Everything the runtime creates comes from here, so the template stays the only list of resources. Intrinsics
(Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::Select, Fn::Split, Fn::If, Fn::FindInMap) are resolved against local
names: a resource's physical name is its declared name property or `<stack>-<LogicalId>`
(e.g. "satflow-local-LedgerTable"). Only the properties the runtime uses are resolved, so IAM policies and
other deploy-only properties never need local values.

Local deviations from CloudFormation, on purpose:
- Ref of a Secrets Manager secret is its name, not its ARN (the ARN gets a random suffix only known after
  creation; GetSecretValue accepts either).
- Ref of a layer, log group or other ignored resource is a placeholder name: the satflow package is installed
  editable in the dev venv, and logs go to the console.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STACK_NAME = "satflow-local"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account

_FUNCTION_TYPES = {"AWS::Serverless::Function"}
_STATE_MACHINE_TYPES = {"AWS::Serverless::StateMachine"}
_HTTP_API_TYPES = {"AWS::Serverless::HttpApi"}
# Types the runtime knows and deliberately does not create (no log line for these).
_KNOWN_UNUSED_TYPES = {"AWS::Serverless::LayerVersion", "AWS::Logs::LogGroup",
                       # deploy-only: monitoring, IAM, keys (nothing local enforces or reads them)
                       "AWS::CloudWatch::Alarm", "AWS::CloudWatch::Dashboard", "AWS::SNS::Topic",
                       "AWS::SNS::Subscription", "AWS::IAM::Role", "AWS::IAM::ManagedPolicy", "AWS::IAM::Policy",
                       "AWS::KMS::Key", "AWS::KMS::Alias", "AWS::SecretsManager::ResourcePolicy",
                       # the WebSocket API: served by websocket_gateway.py from the raw template
                       "AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Integration", "AWS::ApiGatewayV2::Route",
                       "AWS::ApiGatewayV2::Deployment", "AWS::ApiGatewayV2::Stage", "AWS::Lambda::Permission"}


class TemplateError(ValueError):
    """The template uses something the local runtime cannot resolve."""


# ---------------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    name: str
    key_schema: list[dict[str, str]]
    attribute_definitions: list[dict[str, str]]
    billing_mode: str = "PAY_PER_REQUEST"
    provisioned_throughput: dict[str, int] | None = None
    global_secondary_indexes: list[dict[str, Any]] = field(default_factory=list)
    local_secondary_indexes: list[dict[str, Any]] = field(default_factory=list)
    stream_view_type: str | None = None  # None: no stream
    ttl_attribute: str | None = None  # None: TTL disabled


@dataclass(frozen=True)
class SecretSpec:
    logical_id: str
    name: str
    description: str | None = None
    secret_string: str | None = None  # declared SecretString
    generate: dict[str, Any] | None = None  # declared GenerateSecretString


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    name: str
    url: str
    arn: str
    attributes: dict[str, str] = field(default_factory=dict)  # SQS CreateQueue attributes, as strings


@dataclass(frozen=True)
class HttpRoute:
    method: str  # upper case, or "ANY"
    path: str  # "/v1/payments/{payment_id}", or "$default"
    event_name: str

    @property
    def route_key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"


@dataclass(frozen=True)
class SqsEvent:
    event_name: str
    queue_logical_id: str | None
    queue_arn: str
    batch_size: int = 10
    batching_window_s: int = 0
    report_batch_item_failures: bool = False
    enabled: bool = True


@dataclass(frozen=True)
class StreamEvent:
    """A DynamoDB stream event source (`Type: DynamoDB`) on a table of the template."""

    event_name: str
    table_logical_id: str
    batch_size: int = 100
    batching_window_s: int = 0
    starting_position: str = "LATEST"
    report_batch_item_failures: bool = False
    maximum_retry_attempts: int = -1  # -1: until the record expires
    filter_patterns: tuple[dict[str, Any], ...] = ()  # FilterCriteria.Filters[].Pattern, parsed
    enabled: bool = True


@dataclass(frozen=True)
class ScheduleEvent:
    event_name: str
    expression: str  # "rate(1 minute)" / "cron(...)" / "at(...)" (ScheduleV2)
    input: str | None = None  # the constant event (a JSON string), if declared
    enabled: bool = True
    kind: str = "Schedule"  # "Schedule" (an EventBridge rule) or "ScheduleV2" (EventBridge Scheduler)
    name: str | None = None  # the declared rule/schedule Name, if any
    timezone: str | None = None  # ScheduleV2's ScheduleExpressionTimezone (the local runner evaluates UTC)


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    code_dir: Path
    handler: str  # "app.lambda_handler"
    env: dict[str, str]  # Globals.Function.Environment merged with the function's, refs resolved
    timeout_s: int = 3
    memory_mb: int = 128
    reserved_concurrency: int | None = None  # ReservedConcurrentExecutions; None = the account's unreserved pool
    routes: tuple[HttpRoute, ...] = ()
    sqs_events: tuple[SqsEvent, ...] = ()
    schedules: tuple[ScheduleEvent, ...] = ()
    stream_events: tuple[StreamEvent, ...] = ()

    @property
    def handler_module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def handler_attr(self) -> str:
        return self.handler.rsplit(".", 1)[1]

    @property
    def handler_file(self) -> Path:
        return self.code_dir.joinpath(*self.handler_module.split(".")).with_suffix(".py")


@dataclass(frozen=True)
class StateMachineSpec:
    logical_id: str
    name: str
    arn: str
    definition_path: Path | None  # DefinitionUri
    definition: dict[str, Any] | None  # inline Definition (discouraged, but resolvable)
    substitutions: dict[str, str]  # DefinitionSubstitutions, refs resolved
    type: str = "STANDARD"
    schedules: tuple[ScheduleEvent, ...] = ()


@dataclass(frozen=True)
class TemplateModel:
    path: Path
    parameters: dict[str, str]
    tables: tuple[TableSpec, ...]
    secrets: tuple[SecretSpec, ...]
    queues: tuple[QueueSpec, ...]
    functions: tuple[FunctionSpec, ...]
    state_machines: tuple[StateMachineSpec, ...]
    ignored: tuple[tuple[str, str], ...]  # (logical id, type) of resources not created locally
    stack_name: str = STACK_NAME

    @property
    def root(self) -> Path:
        return self.path.parent

    def function(self, logical_id: str) -> FunctionSpec:
        for fn in self.functions:
            if fn.logical_id == logical_id:
                return fn
        raise KeyError(logical_id)

    def routes(self) -> list[tuple[HttpRoute, FunctionSpec]]:
        return [(route, fn) for fn in self.functions for route in fn.routes]


# ---------------------------------------------------------------------------------------------- loading


def load_template(path: str | Path, parameter_overrides: Mapping[str, str] | None = None,
                  local_defaults: Mapping[str, str] | None = None, *, stack_name: str = STACK_NAME) -> TemplateModel:
    """Parse template.yaml and build the model. ``local_defaults`` replace the template's Default of parameters
    the template declares (and the caller did not override): values that only make sense locally.
    ``stack_name`` prefixes undeclared physical names and is AWS::StackName (two stacks, two sets of tables)."""
    path = Path(path).resolve()
    return _ModelBuilder(path, load_template_document(path), dict(parameter_overrides or {}),
                         dict(local_defaults or {}), stack_name).build()


def load_template_document(path: str | Path) -> dict[str, Any]:
    """template.yaml as plain dicts, lists and strings (cfn-lint's decoder understands the short intrinsic tags
    such as !Ref that yaml.safe_load refuses). The contract tests read the template through this too."""
    from cfnlint.decode.cfn_yaml import load  # ~0.8 s cold; only the runtime and template tests pay it

    return _plain(load(str(path)))


def _plain(node: Any) -> Any:
    """cfn-lint's node classes (dict/str subclasses carrying line marks) -> plain Python values."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


class _NoValue:
    """AWS::NoValue: the property is removed."""


NO_VALUE = _NoValue()


def _physical_name_property(resource_type: str) -> str | None:
    return {
        "AWS::DynamoDB::Table": "TableName",
        "AWS::SecretsManager::Secret": "Name",
        "AWS::SQS::Queue": "QueueName",
        "AWS::Serverless::Function": "FunctionName",
        "AWS::Serverless::StateMachine": "Name",
    }.get(resource_type)


class Resolver:
    """Resolves intrinsic functions against parameter values and local physical names."""

    def __init__(self, raw: dict[str, Any], parameters: dict[str, str], stack_name: str = STACK_NAME) -> None:
        self.stack_name = stack_name
        self.list_parameters = {  # Ref of these gives a list
            name for name, spec in (raw.get("Parameters") or {}).items()
            if str(spec.get("Type", "")).startswith("List<") or spec.get("Type") == "CommaDelimitedList"
        }
        self._resources: dict[str, Any] = raw.get("Resources") or {}
        self._mappings: dict[str, Any] = raw.get("Mappings") or {}
        self._condition_defs: dict[str, Any] = raw.get("Conditions") or {}
        self._conditions: dict[str, bool] = {}
        self.parameters = parameters
        self._names: dict[str, str] = {}
        self._naming: set[str] = set()  # recursion guard for names that reference other resources

    # -- names and attributes

    def name(self, logical_id: str) -> str:
        if logical_id in self._names:
            return self._names[logical_id]
        if logical_id in self._naming:
            raise TemplateError(f"circular name reference through {logical_id}")
        self._naming.add(logical_id)
        try:
            resource = self._resources.get(logical_id) or {}
            prop = _physical_name_property(resource.get("Type", ""))
            declared = (resource.get("Properties") or {}).get(prop) if prop else None
            name = str(self.resolve(declared)) if declared is not None else f"{self.stack_name}-{logical_id}"
            if resource.get("Type") == "AWS::SQS::Queue" and declared is None and _truthy(
                (resource.get("Properties") or {}).get("FifoQueue")
            ):
                name += ".fifo"
        finally:
            self._naming.discard(logical_id)
        self._names[logical_id] = name
        return name

    def ref(self, target: str) -> Any:
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{self.stack_name}/local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": NO_VALUE,
        }
        if target in pseudo:
            return pseudo[target]
        if target in self.parameters:
            value = self.parameters[target]
            return value.split(",") if target in self.list_parameters else value
        resource_type = (self._resources.get(target) or {}).get("Type")
        if resource_type is None:
            # SAM's generated resources (FunctionRole, ServerlessHttpApi, ...): a stable placeholder.
            log.debug("Ref %s: not in the template, using a placeholder", target)
            return f"{self.stack_name}-{target}"
        name = self.name(target)
        if resource_type == "AWS::SQS::Queue":
            return queue_url(name)
        if resource_type in _STATE_MACHINE_TYPES:
            return state_machine_arn(name)
        if resource_type in _HTTP_API_TYPES:
            return "local"
        return name  # tables, functions, secrets (see module docstring), everything else

    def get_att(self, target: str, attribute: str) -> str:
        resource_type = (self._resources.get(target) or {}).get("Type", "")
        name = self.name(target)
        attrs: dict[str, str] = {}
        if resource_type == "AWS::DynamoDB::Table":
            arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"
            # The real StreamArn carries a creation timestamp; nothing local consumes this value.
            attrs = {"Arn": arn, "StreamArn": f"{arn}/stream/local"}
        elif resource_type == "AWS::SQS::Queue":
            attrs = {"Arn": queue_arn(name), "QueueName": name, "QueueUrl": queue_url(name)}
        elif resource_type in _FUNCTION_TYPES:
            attrs = {"Arn": function_arn(name)}
        elif resource_type in _STATE_MACHINE_TYPES:
            attrs = {"Arn": state_machine_arn(name), "Name": name}
        elif resource_type == "AWS::SecretsManager::Secret":
            attrs = {"Id": name}
        if attribute in attrs:
            return attrs[attribute]
        log.debug("GetAtt %s.%s: no local value, using a placeholder", target, attribute)
        return f"arn:aws:local:{REGION}:{ACCOUNT_ID}:{target}/{attribute}"

    # -- conditions

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            if name not in self._condition_defs:
                raise TemplateError(f"unknown condition {name}")
            self._conditions[name] = bool(self._evaluate_condition(self._condition_defs[name]))
        return self._conditions[name]

    def _evaluate_condition(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            (fn, arg), = value.items()
            if fn == "Fn::Equals":
                left, right = (self.resolve(v) for v in arg)
                return str(left) == str(right)
            if fn == "Fn::Not":
                return not self._evaluate_condition(arg[0])
            if fn == "Fn::And":
                return all(self._evaluate_condition(v) for v in arg)
            if fn == "Fn::Or":
                return any(self._evaluate_condition(v) for v in arg)
            if fn == "Condition":
                return self.condition(arg)
        return self.resolve(value)

    # -- intrinsic functions

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self.resolve(v) for v in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                target, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(target, self.resolve(attribute))
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join":
                sep, items = arg
                return str(sep).join(str(v) for v in self.resolve(items))
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                sep, text = arg
                return str(self.resolve(text)).split(sep)
            if key == "Fn::If":
                name, if_true, if_false = arg
                return self.resolve(if_true if self.condition(name) else if_false)
            if key == "Fn::FindInMap":
                mapping, top, second = (self.resolve(v) for v in arg[:3])
                return self.resolve(self._mappings[mapping][top][second])
            if key.startswith("Fn::") or key == "Condition":
                raise TemplateError(f"{key} is not supported by the local runtime")
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    _SUB_VARIABLE = re.compile(r"\$\{(!?)([^}]+)\}")

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        local = {k: self.resolve(v) for k, v in variables.items()}

        def substitute(match: re.Match[str]) -> str:
            literal, expression = match.group(1), match.group(2)
            if literal:  # ${!Literal} -> ${Literal}
                return "${" + expression + "}"
            if expression in local:
                return str(local[expression])
            if "." in expression and not expression.startswith("AWS::"):
                target, attribute = expression.split(".", 1)
                return self.get_att(target, attribute)
            return str(self.ref(expression))

        return self._SUB_VARIABLE.sub(substitute, text)


def queue_url(name: str) -> str:
    # moto derives the queue from the URL's last segment, whatever endpoint the client talks to.
    return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT_ID}/{name}"


def queue_arn(name: str) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{name}"


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"


def state_machine_arn(name: str) -> str:
    return f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{name}"


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _merge_globals(global_props: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """SAM's Globals rule: maps merge (the resource wins), lists concatenate, scalars are overridden."""
    merged = dict(global_props)
    for key, value in props.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict):
            merged[key] = _merge_globals(base, value)
        elif isinstance(base, list) and isinstance(value, list):
            merged[key] = base + value
        else:
            merged[key] = value
    return merged


class _ModelBuilder:
    def __init__(self, path: Path, raw: dict[str, Any], overrides: dict[str, str],
                 local_defaults: dict[str, str] | None = None, stack_name: str = STACK_NAME) -> None:
        self.path = path
        self.raw = raw
        self.local_defaults = local_defaults or {}
        self.parameters = self._parameters(overrides)
        self.resolver = Resolver(raw, self.parameters, stack_name)
        self.globals = raw.get("Globals") or {}

    def _parameters(self, overrides: dict[str, str]) -> dict[str, str]:
        declared: dict[str, Any] = self.raw.get("Parameters") or {}
        unknown = set(overrides) - set(declared)
        if unknown:
            raise TemplateError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        values: dict[str, str] = {}
        for name, spec in declared.items():
            if name in overrides:
                value = str(overrides[name])
            elif name in self.local_defaults:
                value = str(self.local_defaults[name])
            elif "Default" in spec:
                value = str(spec["Default"])
            else:
                continue  # reported below, all missing values at once
            allowed = spec.get("AllowedValues")
            if allowed and value not in [str(a) for a in allowed]:
                raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
            values[name] = value
        missing = [n for n in declared if n not in values]
        if missing:
            raise TemplateError(f"parameter(s) without Default need a value: {', '.join(missing)}")
        return values

    def build(self) -> TemplateModel:
        tables: list[TableSpec] = []
        secrets: list[SecretSpec] = []
        queues: list[QueueSpec] = []
        functions: list[FunctionSpec] = []
        machines: list[StateMachineSpec] = []
        ignored: list[tuple[str, str]] = []
        for logical_id, resource in (self.raw.get("Resources") or {}).items():
            rtype = resource.get("Type", "")
            if "Condition" in resource and not self.resolver.condition(resource["Condition"]):
                continue
            props = resource.get("Properties") or {}
            if rtype == "AWS::DynamoDB::Table":
                tables.append(self._table(logical_id, props))
            elif rtype == "AWS::SecretsManager::Secret":
                secrets.append(self._secret(logical_id, props))
            elif rtype == "AWS::SQS::Queue":
                queues.append(self._queue(logical_id, props))
            elif rtype in _FUNCTION_TYPES:
                functions.append(self._function(logical_id, props))
            elif rtype in _STATE_MACHINE_TYPES:
                machines.append(self._state_machine(logical_id, props))
            elif rtype in _HTTP_API_TYPES:
                continue  # routes come from the functions' HttpApi events
            else:
                ignored.append((logical_id, rtype))
                if rtype not in _KNOWN_UNUSED_TYPES:
                    log.info("template: %s (%s) is not created by the local runtime", logical_id, rtype)
        return TemplateModel(self.path, self.parameters, tuple(tables), tuple(secrets), tuple(queues),
                             tuple(functions), tuple(machines), tuple(ignored), self.resolver.stack_name)

    # -- resources

    def _table(self, logical_id: str, props: dict[str, Any]) -> TableSpec:
        p = self.resolver.resolve(props)
        ttl = p.get("TimeToLiveSpecification") or {}
        stream = p.get("StreamSpecification") or {}
        billing = p.get("BillingMode", "PROVISIONED" if "ProvisionedThroughput" in p else "PAY_PER_REQUEST")
        return TableSpec(
            logical_id=logical_id,
            name=self.resolver.name(logical_id),
            key_schema=p["KeySchema"],
            attribute_definitions=p["AttributeDefinitions"],
            billing_mode=billing,
            provisioned_throughput=_ints(p.get("ProvisionedThroughput")),
            global_secondary_indexes=p.get("GlobalSecondaryIndexes") or [],
            local_secondary_indexes=p.get("LocalSecondaryIndexes") or [],
            stream_view_type=stream.get("StreamViewType"),
            ttl_attribute=ttl.get("AttributeName") if _truthy(ttl.get("Enabled")) else None,
        )

    def _secret(self, logical_id: str, props: dict[str, Any]) -> SecretSpec:
        p = self.resolver.resolve(props)
        return SecretSpec(logical_id, self.resolver.name(logical_id), p.get("Description"),
                          p.get("SecretString"), p.get("GenerateSecretString"))

    def _queue(self, logical_id: str, props: dict[str, Any]) -> QueueSpec:
        p = self.resolver.resolve(props)
        name = self.resolver.name(logical_id)
        attributes: dict[str, str] = {}
        for key in ("DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds",
                    "VisibilityTimeout", "FifoQueue", "ContentBasedDeduplication", "DeduplicationScope",
                    "FifoThroughputLimit"):
            if key in p:
                value = p[key]
                attributes[key] = str(value).lower() if isinstance(value, bool) else str(value)
        for key in ("RedrivePolicy", "RedriveAllowPolicy"):
            if key in p:
                attributes[key] = p[key] if isinstance(p[key], str) else json.dumps(p[key])
        return QueueSpec(logical_id, name, queue_url(name), queue_arn(name), attributes)

    def _function(self, logical_id: str, props: dict[str, Any]) -> FunctionSpec:
        merged = _merge_globals(self.globals.get("Function") or {}, props)
        if "InlineCode" in merged or "CodeUri" not in merged or not isinstance(merged["CodeUri"], str):
            raise TemplateError(f"{logical_id}: the local runtime needs a CodeUri directory")
        env = self.resolver.resolve((merged.get("Environment") or {}).get("Variables") or {})
        routes: list[HttpRoute] = []
        sqs: list[SqsEvent] = []
        schedules: list[ScheduleEvent] = []
        streams: list[StreamEvent] = []
        for event_name, event in (merged.get("Events") or {}).items():
            etype, eprops = event.get("Type"), event.get("Properties") or {}
            if etype == "HttpApi":
                routes.append(self._http_route(event_name, eprops))
            elif etype == "SQS":
                sqs.append(self._sqs_event(event_name, eprops))
            elif etype == "DynamoDB":
                streams.append(self._stream_event(logical_id, event_name, eprops))
            elif etype in ("Schedule", "ScheduleV2"):
                schedules.append(self._schedule(event_name, eprops, etype))
            else:
                log.info("template: %s event %s (%s) is not wired locally", logical_id, event_name, etype)
        name = self.resolver.name(logical_id)
        return FunctionSpec(
            logical_id=logical_id,
            name=name,
            arn=function_arn(name),
            code_dir=(self.path.parent / merged["CodeUri"]).resolve(),
            handler=str(merged["Handler"]),
            env={k: _env_string(v) for k, v in env.items()},
            timeout_s=int(self.resolver.resolve(merged.get("Timeout", 3))),
            memory_mb=int(self.resolver.resolve(merged.get("MemorySize", 128))),
            reserved_concurrency=_optional_int(self.resolver.resolve(merged.get("ReservedConcurrentExecutions"))),
            routes=tuple(routes),
            sqs_events=tuple(sqs),
            schedules=tuple(schedules),
            stream_events=tuple(streams),
        )

    def _http_route(self, event_name: str, props: dict[str, Any]) -> HttpRoute:
        p = self.resolver.resolve({k: v for k, v in props.items() if k in ("Method", "Path")})
        method, path = str(p.get("Method", "ANY")).upper(), str(p.get("Path", "$default"))
        if method == "X-AMAZON-APIGATEWAY-ANY-METHOD":
            method = "ANY"
        return HttpRoute(method, path, event_name)

    def _sqs_event(self, event_name: str, props: dict[str, Any]) -> SqsEvent:
        queue = props.get("Queue")
        queue_logical_id = None
        if isinstance(queue, dict) and "Fn::GetAtt" in queue:
            target = queue["Fn::GetAtt"]
            queue_logical_id = target[0] if isinstance(target, list) else target.split(".", 1)[0]
        p = self.resolver.resolve(props)
        return SqsEvent(
            event_name=event_name,
            queue_logical_id=queue_logical_id,
            queue_arn=str(p["Queue"]),
            batch_size=int(p.get("BatchSize", 10)),
            batching_window_s=int(p.get("MaximumBatchingWindowInSeconds", 0)),
            report_batch_item_failures="ReportBatchItemFailures" in (p.get("FunctionResponseTypes") or []),
            enabled=_truthy(p.get("Enabled", True)),
        )

    def _stream_event(self, function_id: str, event_name: str, props: dict[str, Any]) -> StreamEvent:
        stream = props.get("Stream")
        target = stream.get("Fn::GetAtt") if isinstance(stream, dict) else None
        if target is None:
            raise TemplateError(f"{function_id}.{event_name}: Stream must be !GetAtt <Table>.StreamArn locally")
        table_id, attribute = target if isinstance(target, list) else target.split(".", 1)
        if attribute != "StreamArn":
            raise TemplateError(f"{function_id}.{event_name}: Stream must be a table's StreamArn")
        p = self.resolver.resolve({k: v for k, v in props.items() if k != "Stream"})
        patterns = []
        for item in (p.get("FilterCriteria") or {}).get("Filters") or []:
            pattern = item.get("Pattern")
            try:
                patterns.append(json.loads(pattern) if isinstance(pattern, str) else dict(pattern))
            except (TypeError, ValueError) as exc:
                raise TemplateError(f"{function_id}.{event_name}: filter pattern is not JSON: {pattern!r}") from exc
        return StreamEvent(
            event_name=event_name,
            table_logical_id=str(table_id),
            batch_size=int(p.get("BatchSize", 100)),
            batching_window_s=int(p.get("MaximumBatchingWindowInSeconds", 0)),
            starting_position=str(p.get("StartingPosition", "LATEST")),
            report_batch_item_failures="ReportBatchItemFailures" in (p.get("FunctionResponseTypes") or []),
            maximum_retry_attempts=int(p.get("MaximumRetryAttempts", -1)),
            filter_patterns=tuple(patterns),
            enabled=_truthy(p.get("Enabled", True)),
        )

    def _schedule(self, event_name: str, props: dict[str, Any], kind: str = "Schedule") -> ScheduleEvent:
        p = self.resolver.resolve(props)
        expression = p.get("Schedule") or p.get("ScheduleExpression")
        enabled = _truthy(p.get("Enabled", True)) and str(p.get("State", "ENABLED")).upper() == "ENABLED"
        constant = p.get("Input")
        if constant is not None and not isinstance(constant, str):  # SAM wants a string; be lenient with a map
            constant = json.dumps(constant)
        return ScheduleEvent(event_name, str(expression), constant, enabled, kind=kind,
                             name=str(p["Name"]) if p.get("Name") else None,
                             timezone=p.get("ScheduleExpressionTimezone"))

    def _state_machine(self, logical_id: str, props: dict[str, Any]) -> StateMachineSpec:
        merged = _merge_globals(self.globals.get("StateMachine") or {}, props)
        uri = merged.get("DefinitionUri")
        if uri is not None and not isinstance(uri, str):
            raise TemplateError(f"{logical_id}: DefinitionUri must be a local path")
        schedules = tuple(
            self._schedule(name, event.get("Properties") or {}, event["Type"])
            for name, event in (merged.get("Events") or {}).items()
            if event.get("Type") in ("Schedule", "ScheduleV2")
        )
        name = self.resolver.name(logical_id)
        return StateMachineSpec(
            logical_id=logical_id,
            name=name,
            arn=state_machine_arn(name),
            definition_path=(self.path.parent / uri).resolve() if uri else None,
            definition=self.resolver.resolve(merged["Definition"]) if "Definition" in merged else None,
            substitutions={k: _env_string(v) for k, v in
                           self.resolver.resolve(merged.get("DefinitionSubstitutions") or {}).items()},
            type=str(merged.get("Type", "STANDARD")),
            schedules=schedules,
        )


def _ints(value: dict[str, Any] | None) -> dict[str, int] | None:
    return None if value is None else {k: int(v) for k, v in value.items()}


def _env_string(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)
