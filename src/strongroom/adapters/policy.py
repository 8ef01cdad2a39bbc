"""The authorization policy: Rego, evaluated in-process with regopy (rego-cpp).

The policy files (`strongroom/policies/*.rego`, not their `_test.rego` tests) and their data
(`*.json`) are compiled once, at start, into a bundle with one entrypoint; every decision then
only sets the input and runs the bundle's plan. The bundle's hash (SHA-256 over each file's
name and bytes) goes into every audit event a decision allows or refuses, so the log says
which version of the policy decided.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import regopy  # type: ignore[import-untyped]  # ships no type information

from strongroom.domain.authorization import PolicyAnswer

ENTRYPOINT = "strongroom/authz/decision"
ANSWERS_KEPT = 4096  # distinct object-free inputs whose answers a process keeps


def policy_files(directory: Path | None = None) -> list[Path]:
    """The policy's modules and data, in a fixed order (tests excluded)."""
    root = directory or Path(str(resources.files("strongroom") / "policies"))
    return sorted(
        p
        for p in root.iterdir()
        if (p.suffix == ".rego" and not p.name.endswith("_test.rego")) or p.suffix == ".json"
    )


class RegoPolicy:
    """The compiled bundle and one interpreter to run it. Decisions are synchronous (tens to
    hundreds of microseconds) and made on the event loop's thread, so one interpreter serves a
    process."""

    def __init__(self, directory: Path | None = None) -> None:
        files = [(p.name, p.read_text(encoding="utf-8")) for p in policy_files(directory)]
        digest = hashlib.sha256()
        for name, text in files:
            digest.update(name.encode() + b"\0" + text.encode() + b"\0")
        self.bundle_hash = "sha256:" + digest.hexdigest()
        self._bundle, self.scopes = _compiled(self.bundle_hash, tuple(files))
        self._rego = regopy.Interpreter()
        self._answers: dict[str, PolicyAnswer] = {}

    def decide(self, input_: Mapping[str, Any]) -> PolicyAnswer:
        """The policy's decision; anything but a well-formed `allow: true` is a denial.

        A decision is a pure function of the input and the bundle, so the answers to inputs
        naming no object (each route's own check: who, and which action) are kept, a bounded
        number of them; an input naming an object is decided afresh."""
        if "resource" in input_:
            return self._evaluate(input_)
        key = json.dumps(input_, sort_keys=True, separators=(",", ":"))
        answer = self._answers.get(key)
        if answer is None:
            answer = self._evaluate(input_)
            if len(self._answers) >= ANSWERS_KEPT:
                self._answers.clear()
            self._answers[key] = answer
        return answer

    def _evaluate(self, input_: Mapping[str, Any]) -> PolicyAnswer:
        try:
            self._rego.set_input(dict(input_))
            output = self._rego.query_bundle_entrypoint(self._bundle, ENTRYPOINT)
            answer = json.loads(str(output)) if output.ok() else {}
        except (regopy.RegoError, ValueError):
            answer = {}
        expressions = answer.get("expressions") or [None]
        decision = expressions[0] if isinstance(expressions[0], dict) else {}
        if not decision:
            return PolicyAnswer(False, "The policy could not be evaluated.", ("error",), False)
        return PolicyAnswer(
            allow=decision.get("allow") is True,
            reason=str(decision.get("reason") or "No rule allows this."),
            denials=tuple(str(d) for d in decision.get("denials") or ()),
            mask=decision.get("mask") is True,
        )


_BUNDLES: dict[str, tuple[Any, frozenset[str]]] = {}


def _compiled(bundle_hash: str, files: tuple[tuple[str, str], ...]) -> tuple[Any, frozenset[str]]:
    """The bundle and the scopes its actions name, compiled once per process per policy
    version (each RegoPolicy still runs it with an interpreter of its own)."""
    if bundle_hash not in _BUNDLES:
        build = regopy.Interpreter()
        data: dict[str, Any] = {}
        for name, text in files:
            if name.endswith(".rego"):
                build.add_module(name, text)
            else:
                document = json.loads(text)
                build.add_data(document)
                data |= document.get("strongroom", {})
        scopes = frozenset(
            spec["scope"] for spec in data.get("actions", {}).values() if "scope" in spec
        )
        scopes |= {s.replace(":write", ":read") for s in scopes}  # write implies read
        _BUNDLES[bundle_hash] = (build.build(None, [ENTRYPOINT]), scopes)
    return _BUNDLES[bundle_hash]
