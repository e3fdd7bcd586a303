"""Create in moto what template.yaml declares: tables, secrets, queues, state machines.

Idempotent per process: moto's state outlives one runtime (it is module-global), so a resource that already
exists is left as it is (tables keep their items, which tests rely on being isolated by name).
"""
from __future__ import annotations

import json
import logging
import os
import secrets as token_source
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .template import QueueSpec, SecretSpec, StateMachineSpec, TableSpec, TemplateModel

log = logging.getLogger(__name__)

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# The env variable that names the admin key secret is the template's contract for "which secret is the admin
# key" (Globals.Function.Environment), so the runtime needs no list of its own.
ADMIN_KEY_SECRET_ENV = "SATFLOW_ADMIN_KEY_SECRET_ID"
# Step Functions needs a role ARN; moto does not check it.
_LOCAL_ROLE_ARN = "arn:aws:iam::123456789012:role/satflow-local-state-machines"


@dataclass(frozen=True)
class CreatedResources:
    admin_key: str | None  # the admin API key stored in the admin key secret (None: template has none)
    state_machine_arns: dict[str, str]  # logical id -> ARN


def aws_client(service: str, endpoint_url: str) -> Any:
    """A boto3 client for the local moto server, independent of the process's AWS_* environment."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
    )


def _generated_admin_key() -> str:
    """token_urlsafe's alphabet has "_": about one key in 262,144 would start with the account-key prefix."""
    while True:
        key = token_source.token_urlsafe(32)
        if not key.startswith("sk_"):
            return key


def create_resources(model: TemplateModel, endpoint_url: str, environ: Mapping[str, str] | None = None
                     ) -> CreatedResources:
    environ = os.environ if environ is None else environ
    if model.tables:
        dynamodb = aws_client("dynamodb", endpoint_url)
        for table in model.tables:
            create_table(dynamodb, table)
    admin_key = None
    if model.secrets:
        client = aws_client("secretsmanager", endpoint_url)
        admin_secret_name = _admin_key_secret_name(model)
        for secret in model.secrets:
            if secret.name == admin_secret_name:
                admin_key = environ.get("SATFLOW_ADMIN_KEY") or _generated_admin_key()
                put_secret(client, secret, admin_key)
            else:
                put_secret(client, secret, _declared_secret_value(secret))
    if model.queues:
        sqs = aws_client("sqs", endpoint_url)
        for queue in dead_letter_queues_first(model.queues):
            create_queue(sqs, queue)
    machine_arns: dict[str, str] = {}
    if model.state_machines:
        sfn = aws_client("stepfunctions", endpoint_url)
        for machine in model.state_machines:
            machine_arns[machine.logical_id] = create_state_machine(sfn, machine)
    return CreatedResources(admin_key, machine_arns)


def _admin_key_secret_name(model: TemplateModel) -> str | None:
    names = {fn.env[ADMIN_KEY_SECRET_ENV] for fn in model.functions if ADMIN_KEY_SECRET_ENV in fn.env}
    if len(names) > 1:
        raise ValueError(f"functions disagree on {ADMIN_KEY_SECRET_ENV}: {sorted(names)}")
    return next(iter(names), None)


# ---------------------------------------------------------------------------------------------- DynamoDB

_INDEX_KEYS = ("IndexName", "KeySchema", "Projection")


def create_table(client: Any, table: TableSpec) -> None:
    params: dict[str, Any] = {
        "TableName": table.name,
        "KeySchema": table.key_schema,
        "AttributeDefinitions": table.attribute_definitions,
        "BillingMode": table.billing_mode,
    }
    provisioned = table.billing_mode == "PROVISIONED"
    if provisioned:
        params["ProvisionedThroughput"] = table.provisioned_throughput
    if table.global_secondary_indexes:
        params["GlobalSecondaryIndexes"] = [
            _index(gsi, with_throughput=provisioned) for gsi in table.global_secondary_indexes
        ]
    if table.local_secondary_indexes:
        params["LocalSecondaryIndexes"] = [_index(lsi, with_throughput=False) for lsi in table.local_secondary_indexes]
    if table.stream_view_type:
        params["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": table.stream_view_type}
    try:
        client.create_table(**params)
    except client.exceptions.ResourceInUseException:
        log.info("table %s already exists", table.name)
        return
    if table.ttl_attribute:
        client.update_time_to_live(
            TableName=table.name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
        )
    log.info("created table %s", table.name)


def _index(index: dict[str, Any], *, with_throughput: bool) -> dict[str, Any]:
    """A CloudFormation index definition -> CreateTable's (CFN allows extra keys such as ContributorInsights)."""
    out = {k: index[k] for k in _INDEX_KEYS if k in index}
    if with_throughput and "ProvisionedThroughput" in index:
        out["ProvisionedThroughput"] = {k: int(v) for k, v in index["ProvisionedThroughput"].items()}
    return out


# ---------------------------------------------------------------------------------------------- Secrets Manager


def put_secret(client: Any, secret: SecretSpec, value: str) -> None:
    """Create the secret, or set a new value if it exists (a restarted runtime prints the key it stored)."""
    try:
        params = {"Name": secret.name, "SecretString": value}
        if secret.description:
            params["Description"] = secret.description
        client.create_secret(**params)
        log.info("created secret %s", secret.name)
    except client.exceptions.ResourceExistsException:
        client.put_secret_value(SecretId=secret.name, SecretString=value)


def _declared_secret_value(secret: SecretSpec) -> str:
    if secret.secret_string is not None:
        return secret.secret_string
    generate = secret.generate or {}
    alphabet = string.ascii_letters + string.digits
    if not generate.get("ExcludePunctuation"):
        alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
    password = "".join(token_source.choice(alphabet) for _ in range(int(generate.get("PasswordLength", 32))))
    template, key = generate.get("SecretStringTemplate"), generate.get("GenerateStringKey")
    if template and key:
        return json.dumps({**json.loads(template), key: password})
    return password


# ---------------------------------------------------------------------------------------------- SQS


def dead_letter_queues_first(queues: Sequence[QueueSpec]) -> list[QueueSpec]:
    """Template order, except that a queue's dead-letter queue (RedrivePolicy.deadLetterTargetArn) comes before it:
    moto resolves the target when the source queue is created, as CloudFormation's implicit dependency would."""
    by_arn = {q.arn: q for q in queues}
    ordered: list[QueueSpec] = []
    visiting: set[str] = set()

    def visit(queue: QueueSpec) -> None:
        if queue in ordered or queue.arn in visiting:
            return
        visiting.add(queue.arn)
        target = by_arn.get(redrive_target_arn(queue) or "")
        if target is not None:
            visit(target)
        ordered.append(queue)

    for queue in queues:
        visit(queue)
    return ordered


def redrive_target_arn(queue: QueueSpec) -> str | None:
    policy = queue.attributes.get("RedrivePolicy")
    if not policy:
        return None
    try:
        return str(json.loads(policy).get("deadLetterTargetArn") or "") or None
    except (ValueError, AttributeError):
        return None


def create_queue(client: Any, queue: QueueSpec) -> None:
    # CreateQueue is idempotent for identical attributes.
    client.create_queue(QueueName=queue.name, Attributes=queue.attributes)
    log.info("created queue %s", queue.name)


# ---------------------------------------------------------------------------------------------- Step Functions


def state_machine_definition(machine: StateMachineSpec) -> str:
    """The ASL text with DefinitionSubstitutions applied (${Name} -> value), as SAM does at deploy time."""
    if machine.definition_path is not None:
        text = machine.definition_path.read_text()
    else:
        text = json.dumps(machine.definition)
    for key, value in machine.substitutions.items():
        text = text.replace("${" + key + "}", value)
    return text


def create_state_machine(client: Any, machine: StateMachineSpec) -> str:
    definition = state_machine_definition(machine)
    try:  # fail here, naming the file, rather than deep inside moto's ASL parser
        json.loads(definition)
    except json.JSONDecodeError as exc:
        source = machine.definition_path or machine.logical_id
        raise ValueError(f"{source}: not valid JSON after DefinitionSubstitutions: {exc}") from exc
    try:
        response = client.create_state_machine(
            name=machine.name, definition=definition, roleArn=_LOCAL_ROLE_ARN, type=machine.type
        )
        log.info("created state machine %s", machine.name)
        return str(response["stateMachineArn"])
    except client.exceptions.StateMachineAlreadyExists:
        client.update_state_machine(stateMachineArn=machine.arn, definition=definition)
        return machine.arn
