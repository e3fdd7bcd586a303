"""IAM the code needs (moto enforces none, so only this test sees a missing grant).

``satflow/aws_calls.py`` lists, per function (and per managed policy of code running outside Lambda), every AWS
action its code calls and the template resource it acts on. The autouse recorder (tests/aws_calls_recorder.py)
fails any test in which a function's handler makes an AWS call that the registry does not list for it; this file
checks that template.yaml grants exactly what the registry lists, on the right resource (the ARN: ``!GetAtt
X.Arn`` for tables and queues, whose ``!Ref`` is a name or URL; ``!Ref`` for secrets and state machines)."""
from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Any

import pytest

from satflow.aws_calls import FUNCTION_CALLS, POLICY_CALLS

from tests import aws_calls_recorder

from .conftest import load_template, resources_of

_REF_IS_ARN = {"AWS::SecretsManager::Secret", "AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"}
_GETATT_ARN = {"AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::SecretsManager::Secret",
               "AWS::Serverless::StateMachine", "AWS::StepFunctions::StateMachine"}


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _arn_of(template: dict, expr: Any) -> str | None:
    """The logical id whose ARN ``expr`` is, or None (a name, a URL, a wildcard, anything else)."""
    resources = template["Resources"]
    if isinstance(expr, dict) and set(expr) == {"Ref"}:
        target = resources.get(expr["Ref"], {})
        return expr["Ref"] if target.get("Type") in _REF_IS_ARN else None
    if isinstance(expr, dict) and set(expr) == {"Fn::GetAtt"}:
        name, attribute = expr["Fn::GetAtt"] if isinstance(expr["Fn::GetAtt"], list) else expr["Fn::GetAtt"].split(".", 1)
        target = resources.get(name, {})
        return name if attribute == "Arn" and target.get("Type") in _GETATT_ARN else None
    if isinstance(expr, dict) and set(expr) == {"Fn::Sub"} and isinstance(expr["Fn::Sub"], str):
        # execute-api ARNs have no GetAtt: "arn:...:execute-api:<region>:<account>:${Api}/<stage>/..." names Api
        match = re.fullmatch(r"arn:\$\{AWS::Partition\}:execute-api:\$\{AWS::Region\}:\$\{AWS::AccountId\}:"
                             r"\$\{(\w+)\}/[\w*]+/[^$]*", expr["Fn::Sub"])
        if match and resources.get(match.group(1), {}).get("Type") == "AWS::ApiGatewayV2::Api":
            return match.group(1)
    return None


def _statements(template: dict, resource: dict) -> list[dict]:
    """A function's inline policy statements plus those of AWS::IAM::Policy resources attached to its
    SAM-generated role (``<Function>Role``: how a grant on a resource that depends on the function avoids a
    dependency cycle); a managed policy's own statements."""
    props = resource.get("Properties", {})
    if resource.get("Type") == "AWS::IAM::ManagedPolicy":
        return _listed(props["PolicyDocument"]["Statement"])
    found = []
    for policy in _listed(props.get("Policies", [])):
        if isinstance(policy, dict) and "Statement" in policy:
            found += _listed(policy["Statement"])
    role = props.get("Role")
    if isinstance(role, dict) and "Fn::GetAtt" in role:  # a function with its own role (the event-source functions)
        role_id = role["Fn::GetAtt"][0] if isinstance(role["Fn::GetAtt"], list) else role["Fn::GetAtt"].split(".")[0]
        for policy in template["Resources"][role_id]["Properties"].get("Policies", []):
            # "Lambda..." statements are the Lambda service's own use of the role (polling the event source, logs,
            # traces, on-failure destinations), not calls of the code
            found += [s for s in _listed(policy["PolicyDocument"]["Statement"])
                      if not str(s.get("Sid", "")).startswith("Lambda")]
    name = next(lid for lid, res in template["Resources"].items() if res is resource)
    for attached in resources_of(template, "AWS::IAM::Policy").values():
        if {"Ref": f"{name}Role"} in _listed(attached["Properties"].get("Roles", [])):
            found += _listed(attached["Properties"]["PolicyDocument"]["Statement"])
    return found


def grants(template: dict, resource: dict) -> set[tuple[str, str | None]]:
    """(action pattern, logical id of the resource's ARN or None) for every Allow statement."""
    found = set()
    for statement in _statements(template, resource):
        if statement.get("Effect") != "Allow":
            continue
        for action in _listed(statement["Action"]):
            for target in _listed(statement["Resource"]):
                found.add((action, _arn_of(template, target)))
    return found


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


def _subjects(template: dict):
    functions = resources_of(template, "AWS::Serverless::Function")
    for name, calls in FUNCTION_CALLS.items():
        yield name, functions.get(name), calls
    for name, calls in POLICY_CALLS.items():
        yield name, template["Resources"].get(name), calls


def test_every_function_of_the_template_has_its_calls_declared(template):
    assert set(FUNCTION_CALLS) == set(resources_of(template, "AWS::Serverless::Function"))
    # managed policies for code outside Lambda; one attached to function roles (DataKeyUsePolicy: KMS through the
    # data services) is not a caller of its own
    assert set(POLICY_CALLS) == {lid for lid, p in resources_of(template, "AWS::IAM::ManagedPolicy").items()
                                 if "Roles" not in p["Properties"]}


def test_the_template_grants_every_declared_call_on_its_resource(template):
    missing = []
    for name, resource, calls in _subjects(template):
        assert resource is not None, f"{name} is not in template.yaml"
        granted = grants(template, resource)
        for action, targets in calls.items():
            for target in targets:
                if not any(fnmatchcase(action, pattern) and on == target for pattern, on in granted):
                    missing.append(f"{name}: {action} on {target}")
    assert not missing, "template.yaml does not grant:\n" + "\n".join(missing)


def test_the_template_grants_nothing_the_code_does_not_call(template):
    """Least privilege: every granted (action, resource) is declared; a wildcard or a name/URL resource is not an
    ARN and is reported as such."""
    extra = []
    for name, resource, calls in _subjects(template):
        for pattern, on in grants(template, resource):
            if on is None:
                extra.append(f"{name}: {pattern} on a resource that is not an ARN of the template")
            elif not any(fnmatchcase(action, pattern) and on in targets for action, targets in calls.items()):
                extra.append(f"{name}: {pattern} on {on} is granted but no code calls it")
    assert not extra, "\n".join(sorted(extra))


def test_every_attached_policy_names_a_function_role(template):
    roles = {f"{name}Role" for name in resources_of(template, "AWS::Serverless::Function")}
    for name, policy in resources_of(template, "AWS::IAM::Policy").items():
        attached = _listed(policy["Properties"]["Roles"])
        assert attached and all(isinstance(r, dict) and r.get("Ref") in roles for r in attached), name


def test_the_payout_function_may_resume_its_own_workflow(template):
    """Review finding: PayoutFunction sends states:SendTaskSuccess (await_signature answers its own token;
    admin_submit_psbt resumes the waiting workflow) but its policy did not allow it."""
    payout = template["Resources"]["PayoutFunction"]
    assert ("states:SendTaskSuccess", "PayoutStateMachine") in grants(template, payout)


def test_the_recorder_checks_what_iam_evaluates():
    items = [{"Put": {}}, {"Update": {}}, {"ConditionCheck": {}}, {"Update": {}}]
    assert aws_calls_recorder.iam_actions("dynamodb", "TransactWriteItems", {"TransactItems": items}) == [
        "dynamodb:ConditionCheckItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    assert aws_calls_recorder.iam_actions("dynamodb", "TransactGetItems", {}) == ["dynamodb:GetItem"]
    assert aws_calls_recorder.iam_actions("sqs", "SendMessageBatch", {}) == ["sqs:SendMessage"]
    assert aws_calls_recorder.iam_actions("states", "SendTaskSuccess", {}) == ["states:SendTaskSuccess"]
    assert aws_calls_recorder.function_dirs()["payout"] == "PayoutFunction"
