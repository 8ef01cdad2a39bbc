"""The Rego policy's own tests: the cases in src/strongroom/policies/authz_test.rego, each run
through the compiled bundle the service uses; every action against every role and scope; and
the README's permission table against the policy's."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import regopy

from strongroom.adapters.policy import RegoPolicy, policy_files

POLICIES = Path(__file__).parents[2] / "src" / "strongroom" / "policies"
README = Path(__file__).parents[2] / "README.md"


def _cases() -> list[dict[str, Any]]:
    rego = regopy.Interpreter()
    for path in sorted(POLICIES.glob("*_test.rego")):
        rego.add_module(path.name, path.read_text())
    output = rego.query("data.strongroom.authz_test.cases")
    assert output.ok()
    cases: list[dict[str, Any]] = json.loads(str(output))["expressions"][0]
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def policy() -> RegoPolicy:
    return RegoPolicy(POLICIES)


def test_there_are_policy_tests() -> None:
    assert len(CASES) >= 50


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(policy: RegoPolicy, case: dict[str, Any]) -> None:
    answer = policy.decide(case["input"])
    assert answer.allow is case["allow"], answer.reason
    if "denials" in case:
        assert list(answer.denials) == case["denials"], answer.reason
    if "reason" in case:
        assert answer.reason == case["reason"]
    if "mask" in case:
        assert answer.mask is case["mask"]


def _table() -> dict[str, Any]:
    table: dict[str, Any] = json.loads((POLICIES / "data.json").read_text())["strongroom"]
    return table


def _principal(**fields: Any) -> dict[str, Any]:
    return {"id": "p_1", "merchant": "acct_a", "livemode": False, **fields}


def test_a_full_secret_key_may_do_every_action_with_a_scope_and_nothing_else(
    policy: RegoPolicy,
) -> None:
    key = _principal(type="api_key", scopes=None)
    for action, spec in _table()["actions"].items():
        answer = policy.decide({"principal": key, "action": action, "resource": {}})
        assert answer.allow is ("scope" in spec), action


def test_each_role_may_do_exactly_its_actions(policy: RegoPolicy) -> None:
    table = _table()
    for role in table["roles"]:
        operator = _principal(type="operator", role=role, mfa_age_seconds=1)
        for action, spec in table["actions"].items():
            answer = policy.decide({"principal": operator, "action": action, "resource": {}})
            assert answer.allow is (role in spec["roles"]), (role, action)


def test_each_scope_grants_exactly_its_actions(policy: RegoPolicy) -> None:
    """A restricted key with one scope: allowed exactly the actions needing that scope, or
    its read half when the scope is a write."""
    actions = _table()["actions"]
    scopes = {spec["scope"] for spec in actions.values() if "scope" in spec}
    for scope in scopes:
        key = _principal(type="api_key", scopes=[scope])
        granted = {scope, scope.replace(":write", ":read")}
        for action, spec in actions.items():
            answer = policy.decide({"principal": key, "action": action, "resource": {}})
            assert answer.allow is (spec.get("scope") in granted), (scope, action)


def test_a_failing_case_is_caught(policy: RegoPolicy) -> None:
    """The cases would pass vacuously if a decision could not tell allow from deny."""
    viewer = _principal(type="operator", role="viewer")
    assert policy.decide({"principal": viewer, "action": "payment_intents.read"}).allow
    assert not policy.decide({"principal": viewer, "action": "api_keys.write"}).allow


def test_the_readme_permission_table_is_the_policys() -> None:
    """README.md documents who may do what; it must say what data.json enforces."""
    table = json.loads((POLICIES / "data.json").read_text())["strongroom"]
    roles = table["roles"]
    text = README.read_text()
    start = text.index("| action |")
    lines = list(itertools.takewhile(lambda line: line.startswith("|"), text[start:].splitlines()))
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["action", "API key scope", *roles]
    documented = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        action = cells[0].strip("`")
        documented[action] = (
            cells[1].strip("`") if cells[1] != "—" else None,
            [role for role, cell in zip(roles, cells[2:], strict=True) if cell == "✓"],
        )
    expected = {
        name: (spec.get("scope"), [r for r in roles if r in spec["roles"]])
        for name, spec in table["actions"].items()
        if not spec.get("publishable")
    }
    assert documented == expected


def test_the_bundle_hash_changes_with_the_policy(tmp_path: Path) -> None:
    for path in policy_files(POLICIES):
        (tmp_path / path.name).write_text(path.read_text())
    before = RegoPolicy(tmp_path).bundle_hash
    assert before == RegoPolicy(POLICIES).bundle_hash
    rego = tmp_path / "authz.rego"
    rego.write_text(rego.read_text() + "\n# a change\n")
    assert RegoPolicy(tmp_path).bundle_hash != before


def test_answers_to_object_free_inputs_are_kept_and_objects_decided_afresh() -> None:
    """Each route's own check (who, which action) is asked on every request: its answer is
    kept. An input naming an object is evaluated every time, and a kept answer is the one the
    bundle gives."""
    policy = RegoPolicy(POLICIES)
    evaluated: list[Any] = []
    evaluate = policy._evaluate
    policy._evaluate = lambda input_: evaluated.append(input_) or evaluate(input_)  # type: ignore[method-assign]
    key = _principal(type="api_key")
    route_check = {"principal": key, "action": "payment_intents.create"}
    first, again = policy.decide(route_check), policy.decide(dict(route_check))
    assert first is again
    assert first.allow
    assert len(evaluated) == 1
    denied = {"principal": key, "action": "api_keys.write"}
    assert not policy.decide(denied).allow
    theirs = {**route_check, "resource": {"type": "payment_intent", "merchant": "acct_b"}}
    assert policy.decide(theirs).denials == ("tenant",)
    assert policy.decide(theirs).denials == ("tenant",)
    assert len(evaluated) == 4, "objects are decided afresh"
