"""docs/iam-policy.json lists exactly the AWS actions Drover calls.

Two sources: the operations the e2e suite's operators really sent to the emulator (it
records them per access key for its whole life), and the operations the AWS effector
(src/aws.rs) can call. Run after the Rust e2e suite on the same sandbox; `make test` does.
"""

import json
import os
import re
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPERATOR_ACCESS_KEY = "drover-operator"  # e2e/tests/support.rs
# SigV4 signing names that differ from IAM service prefixes.
IAM_PREFIX = {"monitoring": "cloudwatch"}


def statements():
    policy = json.loads((ROOT / "docs/iam-policy.json").read_text())
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        yield statement, [listed] if isinstance(listed, str) else listed


def via_rds(statement):
    """A statement AWS uses on Drover's behalf while serving its RDS calls (KMS grants for
    an encrypted replica): Drover never calls these actions itself, so no e2e run shows
    them."""
    condition = statement.get("Condition", {}).get("StringLike", {})
    return condition.get("kms:ViaService") == "rds.*.amazonaws.com"


def policy_actions():
    actions = []
    for statement, listed in statements():
        if not via_rds(statement):
            actions.extend(listed)
    for action in actions:
        assert "*" not in action, f"wildcard action {action}"
    assert len(actions) == len(set(actions)), "an action is listed twice"
    return set(actions)


def test_actions_granted_through_rds_are_kms_only_and_only_through_rds():
    through = [(s, listed) for s, listed in statements() if via_rds(s)]
    assert through, "the KMS grant an encrypted replica needs is missing"
    for statement, listed in through:
        assert sorted(listed) == ["kms:CreateGrant", "kms:DescribeKey"], listed
        assert statement["Resource"] == "arn:aws:kms:*:*:key/*"


def recorded_actions():
    port = os.environ.get("DROVER_AWS_PORT", "15000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_bed/operations", timeout=5) as r:
            operations = json.load(r)["operations"]
    except OSError as e:
        pytest.fail(f"AWS emulator not answering on 127.0.0.1:{port} ({e}); start the sandbox")
    return {f"{IAM_PREFIX.get(o['service'], o['service'])}:{o['operation']}"
            for o in operations if o["access_key"] == OPERATOR_ACCESS_KEY}


def effector_actions():
    source = (ROOT / "src/aws.rs").read_text()
    return {f"{s}:{o}" for s, o in
            re.findall(r'"(rds|route53|ecr|cloudwatch|secretsmanager)",\s*"([A-Za-z]+)"', source)}


def test_policy_matches_what_the_e2e_suite_called():
    used = recorded_actions()
    if not used:
        pytest.fail(f"no calls signed by {OPERATOR_ACCESS_KEY} recorded: run this after the "
                    "Rust e2e suite on the same sandbox (`make test` does)")
    granted = policy_actions()
    assert sorted(used - granted) == [], "Drover called actions the IAM policy lacks"
    assert sorted(granted - used) == [], "the IAM policy grants actions no e2e run used"


def test_policy_matches_what_the_aws_effector_can_call():
    called = effector_actions()
    assert len(called) >= 10, called
    assert sorted(called ^ policy_actions()) == []
