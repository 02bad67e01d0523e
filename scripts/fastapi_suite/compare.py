"""Compare a mode's per-test outcomes with the baseline's, and say what changed.

A run is the JSON the plugin writes: ``{"results": {nodeid: {"outcome", "reason"}}, ...}``.
A test missing from a run (its module did not collect, say) has the outcome ``absent``.
A difference is *reproduced* when the test differs in the full runs and again when the
differing tests are rerun once, in the baseline and in the mode; only those count.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ABSENT = "absent"
Results = dict[str, dict[str, str]]

_INCLUDE_CONTEXT = "tests/test_router_include_context.py::"
_FLATTENED = _INCLUDE_CONTEXT + "test_router_include_context_matches_flattened_include_metadata"
INHERENT: dict[tuple[str, str], tuple[str, str]] = {
    # (mode, test): (a text the failure must contain, why the difference is the mode's own)
    (
        "route",
        _INCLUDE_CONTEXT + "test_router_include_context_matches_flattened_include_metadata",
    ): (
        "499",
        "the route's own `responses` carry the documented 499 mark, which the test reads "
        "from the route rather than from the OpenAPI document",
    ),
    ("app", _INCLUDE_CONTEXT + "test_router_include_context_matches_flattened_include_metadata"): (
        "499",
        "add_cancellation marks the route itself: its `responses` carry the documented 499, "
        "which the test reads from the route rather than from the OpenAPI document",
    ),
    ("dependency", _FLATTENED): (
        "AssertionError",
        "the test counts the route's dependencies, and the mode adds Depends(cancel_ctx)",
    ),
    ("decorator", _INCLUDE_CONTEXT + "test_iter_route_contexts_returns_direct_route_context"): (
        " is <function ",
        "the test checks the endpoint's identity, and the mode registers the decorated one",
    ),
}
"""Differences that forcing fastapi-hangup on makes by construction, not by behaviour.

Each names the mode, the test and a text of its failure, so any other failure of the same
test still counts. Nothing else is allowed.
"""


@dataclass(frozen=True)
class Run:
    """One pytest run's outcomes."""

    results: Results
    applied: dict[str, int]
    exitstatus: int
    seconds: dict[str, float]

    @classmethod
    def load(cls, path: Path) -> Run:
        document: dict[str, Any] = json.loads(path.read_text())
        return cls(
            document["results"],
            document.get("applied", {}),
            document["exitstatus"],
            document.get("seconds", {}),
        )

    def outcome(self, nodeid: str) -> str:
        entry = self.results.get(nodeid)
        return entry["outcome"] if entry else ABSENT

    def reason(self, nodeid: str) -> str:
        entry = self.results.get(nodeid)
        if entry:
            return entry["reason"]
        module = self.results.get(nodeid.split("::")[0])
        if module and module["outcome"] == "error":
            return f"not collected: {module['reason']}"
        return "not collected"

    def counts(self) -> Counter[str]:
        return Counter(entry["outcome"] for entry in self.results.values())


@dataclass(frozen=True)
class Difference:
    """One test whose outcome in the mode is not the baseline's."""

    nodeid: str
    before: str
    after: str
    reason: str
    reproduced: bool

    @property
    def change(self) -> str:
        return f"{self.before} -> {self.after}"

    def inherent(self, mode: str) -> str | None:
        """Why this difference is the mode's own, if it is one of :data:`INHERENT`."""
        allowed = INHERENT.get((mode, self.nodeid))
        if allowed is None or self.after != "failed" or allowed[0] not in self.reason:
            return None
        return allowed[1]


def differing(baseline: Run, mode: Run) -> list[str]:
    """The tests whose outcome differs between the two runs."""
    nodeids = baseline.results.keys() | mode.results.keys()
    return sorted(n for n in nodeids if baseline.outcome(n) != mode.outcome(n))


def differences(
    baseline: Run, mode: Run, base_rerun: Run | None, mode_rerun: Run | None
) -> list[Difference]:
    """Every difference of the full runs, each checked against the reruns."""
    found = []
    for nodeid in differing(baseline, mode):
        reproduced = (
            base_rerun is None
            or mode_rerun is None
            or _rerun_outcome(base_rerun, baseline, nodeid)
            != _rerun_outcome(mode_rerun, mode, nodeid)
        )
        reason = mode.reason(nodeid) if mode.outcome(nodeid) != "passed" else ""
        if not reason and baseline.outcome(nodeid) != "passed":
            reason = f"(baseline: {baseline.reason(nodeid)})"
        found.append(
            Difference(nodeid, baseline.outcome(nodeid), mode.outcome(nodeid), reason, reproduced)
        )
    return found


def _rerun_outcome(rerun: Run, full: Run, nodeid: str) -> str:
    """A test absent from the full run was not rerun: it stays absent."""
    return rerun.outcome(nodeid) if nodeid in full.results else ABSENT


def rerun_targets(full: Run, nodeids: Iterable[str]) -> list[str]:
    """The differing tests that exist in ``full``, to rerun there (pytest rejects the rest)."""
    return sorted(n for n in nodeids if n in full.results)


def format_counts(run: Run) -> str:
    counts = run.counts()
    order = ["passed", "failed", "error", "skipped", "xfailed", "xpassed"]
    return ", ".join(f"{counts[o]} {o}" for o in order if counts[o] or o in order[:3])


def format_differences(found: list[Difference]) -> list[str]:
    """Reproduced differences grouped by change and reason, biggest group first.

    Reasons that differ only in a word or two (an endpoint's name, an address) share a group,
    shown with ``…`` where they differ.
    """
    groups: list[tuple[str, list[str], list[Difference]]] = []
    for difference in found:
        words = difference.reason.split(" ")
        for change, template, members in groups:
            merged = _merge(template, words) if change == difference.change else None
            if merged is not None:
                template[:] = merged
                members.append(difference)
                break
        else:
            groups.append((difference.change, words, [difference]))
    lines = []
    for change, template, members in sorted(groups, key=lambda g: (-len(g[2]), g[0], g[1])):
        lines.append(f"  {len(members)} x {change}: {' '.join(template) or '(no message)'}")
        lines.extend(f"      {d.nodeid}" for d in members)
    return lines


def _merge(template: list[str], words: list[str], most: int = 2) -> list[str] | None:
    """The template that covers both, if they differ in at most ``most`` words (and the type)."""
    if len(template) != len(words) or not words or template[0] != words[0]:
        return None
    differ = [i for i, (a, b) in enumerate(zip(template, words, strict=True)) if a != b]
    fresh = [i for i in differ if template[i] != WILDCARD]
    if len(fresh) + template.count(WILDCARD) > most:
        return None
    return [WILDCARD if i in differ else word for i, word in enumerate(template)]


WILDCARD = "…"


def slowest_changes(baseline: Run, mode: Run, count: int = 5, least: float = 1.0) -> list[str]:
    """The tests that took the most longer than in the baseline (the time budget's suspects)."""
    grown = {n: mode.seconds[n] - baseline.seconds.get(n, 0.0) for n in mode.seconds}
    top = sorted((s, n) for n, s in grown.items() if s >= least)[::-1][:count]
    return [f"      +{seconds:.1f} s  {nodeid}" for seconds, nodeid in top]
