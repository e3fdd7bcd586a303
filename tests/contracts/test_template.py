"""template.yaml <-> code: what the deployed stack declares must match what the code expects."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from .conftest import ROOT, function_env, function_property, function_statements, http_routes, resources_of

# The Lambda runtime of every function and the layer; the Makefile's LAMBDA_PYTHON and infra/build_layer.py follow it.
RUNTIME = "python3.12"

API_ROUTES = {
    "GET /v1/health",
    "GET /v1/openapi.json",
    "POST /v1/accounts",
    "GET /v1/accounts/me",
    "GET /v1/balance",
    "POST /v1/transfers",
    "GET /v1/transactions",
    "POST /v1/admin/adjustments",
    "POST /v1/invoices",
    "GET /v1/invoices/{payment_hash}",
    "POST /v1/payments",
    "GET /v1/payments/{payment_id}",
    "POST /v1/addresses",
    "GET /v1/deposits",
    "GET /v1/limits",
    "PATCH /v1/admin/accounts/{account_id}",
    "GET /v1/admin/audit",
    "GET /v1/admin/audit/verify",
    "GET /v1/admin/solvency",
    "POST /v1/admin/solvency/resume",
    "POST /v1/admin/solvency/capital",
    "GET /v1/admin/suspense",
    "POST /v1/admin/suspense/{suspense_id}/assign",
    "POST /v1/payouts",
    "GET /v1/payouts/{payout_id}",
    "POST /v1/payouts/{payout_id}/cancel",
    "GET /v1/admin/payout-batches",
    "GET /v1/admin/payout-batches/{batch_id}",
    "GET /v1/admin/payout-batches/{batch_id}/psbt",
    "POST /v1/admin/payout-batches/{batch_id}/psbt",
    "POST /v1/webhooks",
    "GET /v1/webhooks",
    "GET /v1/webhooks/{webhook_id}",
    "DELETE /v1/webhooks/{webhook_id}",
    "GET /v1/webhooks/{webhook_id}/deliveries",
    "POST /v1/webhooks/{webhook_id}/replay",
    "GET /v1/admin/sanctions",
    "GET /v1/admin/reviews",
    "POST /v1/admin/reviews/{review_id}/approve",
    "POST /v1/admin/reviews/{review_id}/reject",
} | {f"{m} {p}" for m, p in (
    # Wallet ecosystem (issue 15)
    ("POST", "/v1/keys"), ("GET", "/v1/keys"), ("POST", "/v1/keys/{key_id}/rotate"), ("DELETE", "/v1/keys/{key_id}"),
    ("POST", "/v1/admin/accounts/{account_id}/keys"), ("DELETE", "/v1/admin/accounts/{account_id}/keys/{key_id}"),
    ("POST", "/v1/lightning-address"),
    ("GET", "/v1/lightning-address"), ("PUT", "/v1/admin/accounts/{account_id}/lightning-address"),
    ("GET", "/.well-known/lnurlp/{username}"), ("GET", "/lnurlp/{username}/callback"),
    ("POST", "/v1/lnurl/withdraw-links"), ("GET", "/v1/lnurl/withdraw-links"),
    ("DELETE", "/v1/lnurl/withdraw-links/{link_id}"), ("GET", "/lnurlw/{k1}"), ("GET", "/lnurlw/{k1}/callback"),
    ("GET", "/v1/invoices"), ("GET", "/v1/transactions/export"),
    ("POST", "/v1/lndhub"), ("POST", "/lndhub/auth"), ("POST", "/lndhub/addinvoice"), ("POST", "/lndhub/payinvoice"),
    ("GET", "/lndhub/balance"), ("GET", "/lndhub/gettxs"), ("GET", "/lndhub/getuserinvoices"),
    ("GET", "/lndhub/getpending"), ("GET", "/lndhub/decodeinvoice"), ("GET", "/lndhub/checkpayment/{payment_hash}"),
    ("GET", "/lndhub/getinfo"), ("GET", "/lndhub/getbtc"))}
CONFIG_PY = ROOT / "layers" / "satflow" / "satflow" / "config.py"
# Read by config.py but deliberately never set in AWS (documented as local-runtime only).
LOCAL_ONLY_ENV = {"SATFLOW_ADMIN_KEY", "SATFLOW_WORKFLOW_WAIT_S", "SATFLOW_WEBHOOK_ALLOW_PRIVATE",
                  "SATFLOW_WEBHOOK_RETRY_BASE_S"}
# Set only on the functions that use them (a Globals entry would make the state machine depend on itself).
PER_FUNCTION_ENV = {
    "SATFLOW_PAYMENT_STATE_MACHINE_ARN": {"ApiFunction", "MonitorFunction"},
    "SATFLOW_PAYOUT_STATE_MACHINE_ARN": {"MonitorFunction"},
    # Only the refresh job fetches the list; every other function screens against the stored copy.
    "SATFLOW_SANCTIONS_LIST_URL": {"MonitorFunction"},
    "SATFLOW_SANCTIONS_EXTRA_URL": {"MonitorFunction"},
    "SATFLOW_REVIEW_STATE_MACHINE_ARN": {"ApiFunction", "MonitorFunction"},
    # The WebSocket API's stage URL (@connections): only the functions that post to connections.
    "SATFLOW_WEBSOCKET_ENDPOINT": {"WebSocketFunction", "WebSocketFanoutFunction"},
}
# What each SATFLOW_ variable must point at in the template.
ENV_REFS = {
    "SATFLOW_TABLE": {"Ref": "LedgerTable"},
    "SATFLOW_ADMIN_KEY_SECRET_ID": {"Ref": "AdminKeySecret"},
    "SATFLOW_SYSTEM_SHARDS": {"Ref": "SystemShards"},
    "SATFLOW_NETWORK": {"Ref": "Network"},
    "SATFLOW_LND_SECRET_ID": {"Ref": "LndSecret"},
    "SATFLOW_INVOICE_QUEUE_URL": {"Ref": "InvoiceEventsQueue"},
    "SATFLOW_BITCOIND_SECRET_ID": {"Ref": "BitcoindSecret"},
    "SATFLOW_SIGNER_SECRET_ID": {"Ref": "SignerSecret"},
    "SATFLOW_DEPOSIT_ACCOUNT_KEY": {"Ref": "DepositAccountKey"},
    "SATFLOW_WEBHOOK_QUEUE_URL": {"Ref": "WebhookDeliveryQueue"},
}
API_DYNAMODB_ACTIONS = {
    "dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",  # index items (open invoices, pending payments) leave with the transaction that ends them
    "dynamodb:BatchGetItem",  # deposit listing reads its deposits in one call
}
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer"}


def _fn_ids(functions):
    return sorted(functions)


# ------------------------------------------------------------------------------------------------ functions


def _handler_file(fn: dict) -> tuple[Path, str]:
    props = fn["Properties"]
    module, attr = props["Handler"].rsplit(".", 1)
    return ROOT / props["CodeUri"] / Path(*module.split(".")).with_suffix(".py"), attr


def _module_defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return True
    return False


def test_there_is_an_api_function(functions):
    assert "ApiFunction" in functions


def test_every_function_code_uri_exists(functions):
    for lid, fn in functions.items():
        code_uri = fn["Properties"]["CodeUri"]
        assert isinstance(code_uri, str), f"{lid}: CodeUri must be a local directory"
        assert (ROOT / code_uri).is_dir(), f"{lid}: CodeUri {code_uri} does not exist"
        assert code_uri.startswith("functions/"), f"{lid}: handlers live under functions/"


def test_every_handler_module_defines_its_handler(functions):
    for lid, fn in functions.items():
        path, attr = _handler_file(fn)
        assert path.is_file(), f"{lid}: handler module {path.relative_to(ROOT)} does not exist"
        assert _module_defines(path, attr), f"{lid}: {path.relative_to(ROOT)} does not define {attr}"


def test_functions_use_the_layer_and_its_runtime(template, functions):
    layer = template["Resources"]["SatflowLayer"]["Properties"]
    for lid, fn in functions.items():
        runtime = function_property(template, fn, "Runtime")
        arches = function_property(template, fn, "Architectures", ["x86_64"])
        assert runtime in layer["CompatibleRuntimes"], lid
        assert set(arches) <= set(layer["CompatibleArchitectures"]), lid
        assert {"Ref": "SatflowLayer"} in function_property(template, fn, "Layers", []), lid
        assert function_property(template, fn, "Tracing") == "Active", lid


def test_api_function_settings(template, functions):
    props = functions["ApiFunction"]["Properties"]
    assert props["CodeUri"].rstrip("/") == "functions/api"
    assert props["Handler"] == "app.lambda_handler"
    assert function_property(template, functions["ApiFunction"], "Runtime") == RUNTIME
    assert function_property(template, functions["ApiFunction"], "Architectures") == ["arm64"]
    assert props["MemorySize"] == 512
    assert props["Timeout"] == 15


# ------------------------------------------------------------------------------------------------ routes


def test_api_function_routes_are_exactly_the_public_api(functions):
    assert set(http_routes(functions["ApiFunction"])) == API_ROUTES


def test_http_api_events_target_the_http_api_without_an_authorizer(template, functions):
    apis = resources_of(template, "AWS::Serverless::HttpApi")
    assert set(apis) == {"HttpApi"}
    assert "Auth" not in apis["HttpApi"].get("Properties", {}), "the function authenticates API keys itself"
    seen: dict[str, str] = {}
    for lid, fn in functions.items():
        for route, props in http_routes(fn).items():
            assert props.get("ApiId") == {"Ref": "HttpApi"}, f"{lid} {route}: must use the declared HttpApi"
            assert route not in seen, f"{route} is declared by {seen.get(route)} and {lid}"
            seen[route] = lid


# ------------------------------------------------------------------------------------------------ table


def test_ledger_table(template):
    table = template["Resources"]["LedgerTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert table.get("DeletionPolicy") == "Retain"
    assert table.get("UpdateReplacePolicy") == "Retain"
    props = table["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    attrs = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    assert attrs == {"pk": "S", "sk": "S"}
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True


def test_admin_key_secret_is_generated_without_punctuation(template):
    secret = template["Resources"]["AdminKeySecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    gen = secret["Properties"]["GenerateSecretString"]
    assert gen["ExcludePunctuation"] is True
    assert gen["PasswordLength"] == 48
    # The SecretString is the key itself, not a JSON document.
    assert "SecretStringTemplate" not in gen and "GenerateStringKey" not in gen
    assert "SecretString" not in secret["Properties"]


def test_parameters_and_outputs(template):
    params = template["Parameters"]
    assert params["Network"]["Default"] == "regtest"
    assert set(params["Network"]["AllowedValues"]) == {"bitcoin", "testnet", "signet", "regtest"}
    assert params["SystemShards"]["Type"] == "Number"
    assert int(params["SystemShards"]["Default"]) == 8
    assert {"ApiUrl", "TableName"} <= set(template["Outputs"])


# ------------------------------------------------------------------------------------------------ environment


def _config_env_names() -> set[str]:
    """Names config.py reads: env.get("X"), os.environ.get("X"), os.getenv("X"), _int("X"), environ["X"]."""
    tree = ast.parse(CONFIG_PY.read_text(), filename=str(CONFIG_PY))
    names: set[str] = set()
    for node in ast.walk(tree):
        arg = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if (isinstance(func, ast.Attribute) and func.attr in {"get", "getenv"}) or (
                isinstance(func, ast.Name) and (func.id.startswith("_") or func.id == "getenv")
            ):
                arg = node.args[0]
        elif isinstance(node, ast.Subscript):
            arg = node.slice
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and re.fullmatch(r"[A-Z][A-Z0-9_]+", arg.value):
            names.add(arg.value)
    return names


def test_config_parser_finds_the_settings():
    names = _config_env_names()
    assert {"SATFLOW_TABLE", "SATFLOW_SYSTEM_SHARDS"} <= names, names


def test_every_satflow_setting_is_set_for_every_function(template, functions):
    wanted = {n for n in _config_env_names() if n.startswith("SATFLOW_")} - LOCAL_ONLY_ENV - set(PER_FUNCTION_ENV)
    for lid, fn in functions.items():
        env = function_env(template, fn)
        for name, users in PER_FUNCTION_ENV.items():
            assert (name in env) == (lid in users), f"{lid}: {name} belongs exactly to {sorted(users)}"
        missing = sorted(wanted - set(env))
        assert not missing, f"{lid} lacks environment variables read by config.py: {missing}"
        for name in sorted(LOCAL_ONLY_ENV & set(env)):
            pytest.fail(f"{lid} sets {name}, which is local-runtime only (secrets come from Secrets Manager)")


def test_settings_point_at_the_right_resources(template, functions):
    for lid, fn in functions.items():
        env = function_env(template, fn)
        for name, ref in ENV_REFS.items():
            assert env.get(name) == ref, f"{lid}: {name} should be {ref}, is {env.get(name)}"
        assert env.get("POWERTOOLS_SERVICE_NAME") == "satflow"
        assert env.get("POWERTOOLS_METRICS_NAMESPACE") == "satflow"
        assert env.get("LOG_LEVEL") in {"DEBUG", "INFO", "WARNING", "ERROR"}


# ------------------------------------------------------------------------------------------------ IAM


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _statements(fn: dict):
    for policy in fn.get("Properties", {}).get("Policies", []) or []:
        if isinstance(policy, dict) and "Statement" in policy:
            yield from _as_list(policy["Statement"])


def test_no_broad_dynamodb_grants(template, functions):
    for lid, fn in functions.items():
        for policy in fn.get("Properties", {}).get("Policies", []) or []:
            # SAM policy templates / managed policies for DynamoDB grant Scan and DeleteItem: not here.
            name = policy if isinstance(policy, str) else next(iter(policy)) if isinstance(policy, dict) else ""
            assert "dynamodb" not in str(name).lower(), f"{lid}: use explicit statements, not {name}"
        for st in function_statements(template, fn):
            actions = [a.lower() for a in _as_list(st.get("Action", []))]
            assert "*" not in actions, f"{lid}: Action '*'"
            ddb = [a for a in actions if a.startswith("dynamodb:")]
            if not ddb:
                continue
            assert "dynamodb:*" not in ddb, f"{lid}: dynamodb:*"
            assert not any("*" in a for a in ddb), f"{lid}: wildcard DynamoDB action {ddb}"
            assert "*" not in _as_list(st.get("Resource")), f"{lid}: DynamoDB on Resource '*'"


def test_api_function_is_least_privilege(functions):
    statements = list(_statements(functions["ApiFunction"]))
    ddb_actions = {a for st in statements for a in _as_list(st["Action"]) if a.startswith("dynamodb:")}
    assert ddb_actions == API_DYNAMODB_ACTIONS, "the API never scans the table"
    for st in statements:
        actions = _as_list(st["Action"])
        resources = _as_list(st["Resource"])
        assert st["Effect"] == "Allow"
        if any(a.startswith("dynamodb:") for a in actions):
            assert resources == [{"Fn::GetAtt": ["LedgerTable", "Arn"]}], resources
        if any(a.startswith("secretsmanager:") for a in actions):
            assert actions == ["secretsmanager:GetSecretValue"]
            assert resources == [{"Ref": "AdminKeySecret"}, {"Ref": "LndSecret"}], resources
        if any(a.startswith("states:") for a in actions):
            assert (actions, resources) in ((["states:StartExecution"], [{"Ref": "PaymentStateMachine"}]),
                                            (["states:SendTaskSuccess"], [{"Ref": "PayoutStateMachine"}]),
                                            (["states:StartExecution"], [{"Ref": "ReviewStateMachine"}]),
                                            (["states:SendTaskSuccess"], [{"Ref": "PaymentStateMachine"},
                                                                          {"Ref": "ReviewStateMachine"}]))


# ------------------------------------------------------------------------------------------------ layer


def _requirements(path: Path) -> dict[str, str]:
    """name -> specifier of every requirement line (comments and options skipped)."""
    reqs = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", line)
        assert m, line
        reqs[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2).strip()
    return reqs


def test_layer_content(template):
    layer = template["Resources"]["SatflowLayer"]
    props = layer["Properties"]
    content = ROOT / props["ContentUri"]
    assert (content / "satflow" / "__init__.py").is_file(), "the package must sit at the root of ContentUri"
    assert (content / "requirements.txt").is_file()
    # sam build runs layers/satflow/Makefile, i.e. infra/build_layer.py: no Docker and no botocore in the layer
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert "build-SatflowLayer:" in (content / "Makefile").read_text()


def test_layer_requirements_are_pinned_and_exclude_the_runtime_sdk(template):
    content = ROOT / template["Resources"]["SatflowLayer"]["Properties"]["ContentUri"]
    reqs = _requirements(content / "requirements.txt")
    assert not RUNTIME_PROVIDED & set(reqs), "boto3/botocore/s3transfer come from the Lambda runtime"
    unpinned = sorted(n for n, spec in reqs.items() if not spec.startswith("=="))
    assert not unpinned, f"the layer list is installed with --no-deps and must be fully pinned: {unpinned}"


def test_layer_requirements_agree_with_pyproject(template):
    from packaging.requirements import Requirement

    content = ROOT / template["Resources"]["SatflowLayer"]["Properties"]["ContentUri"]
    reqs = _requirements(content / "requirements.txt")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for raw in project["dependencies"]:
        req = Requirement(raw)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in RUNTIME_PROVIDED:
            continue
        assert name in reqs, f"{name} is a runtime dependency in pyproject.toml but missing from the layer"
        version = reqs[name].removeprefix("==")
        assert req.specifier.contains(version, prereleases=True), f"{name}: layer pins {version}, pyproject {raw}"


# ------------------------------------------------------------------------------------------------ runtime


def test_one_python_runtime_everywhere(template, functions):
    """Functions, layer, the layer build and the Makefile's venv Python name the same minor version."""
    assert template["Globals"]["Function"]["Runtime"] == RUNTIME
    for lid, fn in functions.items():
        assert function_property(template, fn, "Runtime") == RUNTIME, lid
        assert function_property(template, fn, "Architectures") == ["arm64"], lid
    assert template["Resources"]["SatflowLayer"]["Properties"]["CompatibleRuntimes"] == [RUNTIME]
    minor = RUNTIME.removeprefix("python")
    assert re.search(rf"^LAMBDA_PYTHON := {re.escape(minor)}$", (ROOT / "Makefile").read_text(), re.M)
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_layer_contract", ROOT / "infra" / "build_layer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.PY_VERSION == minor
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(requires).contains(f"{minor}.0"), f"pyproject requires-python {requires} excludes {minor}"


# ------------------------------------------------------------------------------------------------ production


def _ref_or_getatt(value) -> str | None:
    if isinstance(value, dict) and "Ref" in value:
        return value["Ref"]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        return target[0] if isinstance(target, list) else target.split(".")[0]
    return None


def test_secrets_hold_no_literal_value(template):
    """A literal SecretString would be written again by a stack update that touches the secret, over the value
    the operator stored; generated values are written only at creation."""
    secrets = resources_of(template, "AWS::SecretsManager::Secret")
    assert {"AdminKeySecret", "LndSecret", "BitcoindSecret", "SignerSecret"} <= set(secrets)
    for lid, secret in secrets.items():
        assert "SecretString" not in secret["Properties"], f"{lid}: literal SecretString"
        assert "GenerateSecretString" in secret["Properties"], lid
    outputs = template["Outputs"]
    for lid in ("AdminKeySecret", "LndSecret", "BitcoindSecret", "SignerSecret"):
        assert outputs[f"{lid}Arn"]["Value"] == {"Ref": lid}, f"the operator needs {lid}'s ARN to fill it"


def test_only_the_payout_function_reads_the_signing_key(template, functions):
    readers = {lid for lid, fn in functions.items()
               for st in function_statements(template, fn)
               if {"Ref": "SignerSecret"} in _as_list(st.get("Resource"))}
    assert readers == {"PayoutFunction"}
    policies = [r for r in resources_of(template, "AWS::SecretsManager::ResourcePolicy").values()
                if r["Properties"]["SecretId"] == {"Ref": "SignerSecret"}]
    assert len(policies) == 1
    (deny,) = policies[0]["Properties"]["ResourcePolicy"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "secretsmanager:GetSecretValue"
    assert deny["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["PayoutFunctionRole", "Arn"]}}}


def test_event_source_functions_have_scoped_roles_not_account_wide_managed_policies(template, functions):
    """SAM attaches AWSLambdaSQSQueueExecutionRole / AWSLambdaDynamoDBExecutionRole (every queue or stream of the
    account) to a generated role with an SQS or DynamoDB event; these functions bring their own role instead."""
    for lid, fn in functions.items():
        props = fn["Properties"]
        kinds = {e["Type"] for e in props.get("Events", {}).values()}
        for policy in props.get("Policies", []) or []:
            assert not (isinstance(policy, str) and ("SQS" in policy or "DynamoDB" in policy)), f"{lid}: {policy}"
        if kinds & {"SQS", "DynamoDB", "Kinesis"}:
            assert props.get("Role") == {"Fn::GetAtt": [f"{lid}Role", "Arn"]}, (
                f"{lid}: an {sorted(kinds)} event source needs its own scoped role {lid}Role, like InvoiceFunctionRole "
                "(SAM would attach an account-wide managed policy to a generated one)")
            assert "Policies" not in props, f"{lid}: SAM ignores Policies next to Role"
            role = template["Resources"][f"{lid}Role"]["Properties"]
            assert "ManagedPolicyArns" not in role, lid
            for st in function_statements(template, fn):
                if st["Resource"] == "*":
                    assert all(a.startswith("xray:") for a in st["Action"]), f"{lid}: {st['Action']} on *"


def test_every_function_and_workflow_logs_to_a_group_with_retention(template, functions):
    groups = resources_of(template, "AWS::Logs::LogGroup")
    for lid, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {
            "Fn::FindInMap": ["StageSettings", {"Ref": "Stage"}, "LogRetentionDays"]}, lid
    for lid, fn in functions.items():
        hint = f"{lid}: add LoggingConfig.LogGroup: !Ref {lid}LogGroup and that log group (template.yaml, log groups)"
        assert fn["Properties"].get("LoggingConfig", {}).get("LogGroup") == {"Ref": f"{lid}LogGroup"}, hint
        assert f"{lid}LogGroup" in groups, hint
    for lid, machine in resources_of(template, "AWS::Serverless::StateMachine").items():
        props = machine["Properties"]
        assert props["Tracing"] == {"Enabled": True}, lid
        logging = props["Logging"]
        assert logging["Level"] == "ALL" and logging["IncludeExecutionData"] is False, lid
        (dest,) = logging["Destinations"]
        assert dest["CloudWatchLogsLogGroup"]["LogGroupArn"] == {"Fn::GetAtt": [f"{lid}LogGroup", "Arn"]}, lid
    for days in template["Mappings"]["StageSettings"].values():
        assert days["LogRetentionDays"] in (14, 30, 90, 365, 731)


def test_scheduled_and_stream_invocations_have_failure_destinations(template, functions):
    monitor = functions["MonitorFunction"]["Properties"]
    assert monitor["ReservedConcurrentExecutions"] >= len(
        [e for e in monitor["Events"].values() if e["Properties"]["Schedule"] == "rate(1 minute)"])
    invoke = monitor["EventInvokeConfig"]
    assert invoke["DestinationConfig"]["OnFailure"] == {
        "Type": "SQS", "Destination": {"Fn::GetAtt": ["MonitorFailuresQueue", "Arn"]}}
    for lid, fn in functions.items():
        for name, event in fn["Properties"].get("Events", {}).items():
            if event["Type"] == "DynamoDB":
                props = event["Properties"]
                assert _ref_or_getatt(props["DestinationConfig"]["OnFailure"]["Destination"]), f"{lid}.{name}"
                # the destination must be reached before the stream's 24 h retention drops the records
                assert 0 < props["MaximumRecordAgeInSeconds"] < 86400, f"{lid}.{name}"
            if event["Type"] == "SQS":
                assert event["Properties"]["ScalingConfig"]["MaximumConcurrency"] >= 2, f"{lid}.{name}"
                assert "ReservedConcurrentExecutions" not in fn["Properties"], (
                    f"{lid}: reserved concurrency on an SQS consumer turns throttles into receive counts (DLQ)")


def test_api_throttling_table_protection_and_encryption_option(template):
    api = template["Resources"]["HttpApi"]["Properties"]
    assert api["DefaultRouteSettings"] == {"ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
                                           "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"}}
    table = template["Resources"]["LedgerTable"]["Properties"]
    assert table["DeletionProtectionEnabled"] is True
    key = {"Fn::If": ["UseCustomerKey", {"Fn::GetAtt": ["DataKey", "Arn"]}, {"Ref": "AWS::NoValue"}]}
    assert table["SSESpecification"]["KMSMasterKeyId"] == key
    for lid, secret in resources_of(template, "AWS::SecretsManager::Secret").items():
        assert secret["Properties"]["KmsKeyId"] == key, lid
    for lid, queue in resources_of(template, "AWS::SQS::Queue").items():
        assert queue["Properties"]["KmsMasterKeyId"] == key, lid
    for lid, group in resources_of(template, "AWS::Logs::LogGroup").items():
        assert group["Properties"]["KmsKeyId"] == key, lid
    data_key = template["Resources"]["DataKey"]
    assert data_key["Condition"] == "UseCustomerKey" and data_key["DeletionPolicy"] == "Retain"
    assert data_key["Properties"]["EnableKeyRotation"] is True
    roles = {r["Ref"] for r in template["Resources"]["DataKeyUsePolicy"]["Properties"]["Roles"]}
    assert roles == {f"{lid}Role" for lid in resources_of(template, "AWS::Serverless::Function")}, (
        "DataKeyUsePolicy.Roles lists every function's role (with a customer-managed key they cannot read data otherwise)")


def _bip84_test_vector_keys() -> set[str]:
    from embit import bip32, bip39
    from embit.networks import NETWORKS

    root = bip32.HDKey.from_seed(bip39.mnemonic_to_seed("abandon " * 11 + "about"))
    keys = set()
    for path in ("m/84h/0h/0h", "m/84h/1h/0h"):
        account = root.derive(path).to_public()
        for net in ("main", "test"):
            for version in ("xpub", "zpub"):
                keys.add(account.to_base58(version=NETWORKS[net][version]))
    return keys


def test_mainnet_rules_refuse_the_test_key_and_unsafe_settings(template):
    rule = template["Rules"]["MainnetNeedsRealKeys"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "Network"}, "bitcoin"]}
    asserts = [a["Assert"] for a in rule["Assertions"]]
    contains = next(a["Fn::Not"][0]["Fn::Contains"] for a in asserts if "Fn::Not" in a and "Fn::Contains" in a["Fn::Not"][0])
    refused, value = contains
    assert value == {"Ref": "DepositAccountKey"}
    assert set(refused) == _bip84_test_vector_keys()
    assert template["Parameters"]["DepositAccountKey"]["Default"] in refused
    assert {"Fn::Equals": [{"Ref": "Stage"}, "prod"]} in asserts
    assert {"Fn::Equals": [{"Ref": "SanctionsWhenUnloaded"}, "block"]} in asserts
    prod = template["Rules"]["ProdRoutesItsAlarms"]
    assert prod["RuleCondition"] == {"Fn::Equals": [{"Ref": "Stage"}, "prod"]}
    pattern = re.compile(template["Parameters"]["DepositAccountKey"]["AllowedPattern"])
    assert all(pattern.match(k) for k in refused) and not pattern.match("SET-ME")


def test_outputs_cover_what_an_operator_fills_or_calls(template):
    outputs = template["Outputs"]
    wanted = {"ApiUrl", "TableName", "AdminKeySecretArn", "LndSecretArn", "BitcoindSecretArn", "SignerSecretArn",
              "MonitorFunctionName", "PayoutFunctionName", "PaymentStateMachineArn", "PayoutStateMachineArn",
              "ReviewStateMachineArn", "InvoiceEventsQueueUrl", "InvoiceEventsDLQUrl", "WebhookDeliveryDLQUrl",
              "MonitorFailuresQueueUrl", "StreamFailuresQueueUrl", "AlarmTopicArnOut", "DashboardUrl",
              "InvoiceListenerPolicyArn"}
    assert wanted <= set(outputs)
    for lid in resources_of(template, "AWS::Serverless::StateMachine"):
        assert outputs[f"{lid}Arn"]["Value"] == {"Ref": lid}


def test_samconfig_profiles_use_declared_parameters(template):
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert {"default", "prod"} <= set(config)
    params = template["Parameters"]
    for profile in ("default", "prod"):
        deploy = config[profile]["deploy"]["parameters"]
        overrides = dict(item.split("=", 1) for item in deploy["parameter_overrides"].split())
        assert set(overrides) <= set(params), f"{profile}: unknown parameters {set(overrides) - set(params)}"
        for name, value in overrides.items():
            allowed = params[name].get("AllowedValues")
            assert allowed is None or value in allowed, f"{profile}: {name}={value}"
        assert "CAPABILITY_IAM" in deploy["capabilities"]
    prod = dict(item.split("=", 1) for item in config["prod"]["deploy"]["parameters"]["parameter_overrides"].split())
    assert prod["Stage"] == "prod" and prod["Network"] == "bitcoin" and prod["EncryptionKey"] == "customer-managed"
    assert config["prod"]["deploy"]["parameters"]["confirm_changeset"] is True
