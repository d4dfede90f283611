"""The model-family coverage table, built from the outcomes of the tests this run executed.

A test opts in with ``@pytest.mark.family_check(CHECK)`` (one of :data:`CHECKS`); its family is
the ``family=`` argument of the marker or else the test's ``kind`` parameter (a ``_vllm``
suffix, the vLLM-sized variant of a checkpoint, is dropped). Each cell of the table says how
that family's tests of that check ended in this run:

- ``pass``: every such test passed; ``FAIL``: at least one failed or errored;
- ``skip [n]``: skipped, reason ``n`` is listed under the table (``pass + skip [n]``: some of
  them passed, the others were skipped);
- ``not run``: collected but never run (deselected by ``-k``/``-m``, or after ``-x`` stopped);
- ``-``: no test of that check exists for the family.

``pytest --family-coverage[=PATH]`` prints the table (Markdown) at the end of the run and, given
PATH, writes it there too (``make coverage`` runs just the marked tests).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHECKS = (
    "logprobs vs transformers",
    "gradients vs transformers",
    "export bit-exact",
    "vLLM greedy after sync",
    "TP=2 / EP=2",
    "refused with reason",
)


def _family_and_check(item: pytest.Item) -> tuple[str, str] | None:
    marker = item.get_closest_marker("family_check")
    if marker is None:
        return None
    if len(marker.args) != 1 or marker.args[0] not in CHECKS:
        raise pytest.UsageError(f"{item.nodeid}: family_check takes one of {CHECKS}, got {marker.args}")
    family = marker.kwargs.get("family")
    if family is None:
        params = getattr(item, "callspec", None)
        if params is None or "kind" not in params.params:
            raise pytest.UsageError(f"{item.nodeid}: family_check needs family= or a 'kind' parameter")
        family = str(params.params["kind"]).removesuffix("_vllm")
    return family, marker.args[0]


class FamilyCoverage:
    """Collects the outcome of every ``family_check`` test; prints and writes the table."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self.cells: dict[str, tuple[str, str]] = {}  # nodeid -> (family, check)
        self.outcomes: dict[str, tuple[str, str]] = {}  # nodeid -> (passed|failed|skipped, skip reason)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # First of all implementations: sees the items before -k/-m/--deselect remove some.
        for item in items:
            cell = _family_and_check(item)
            if cell is not None:
                self.cells[item.nodeid] = cell

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid not in self.cells:
            return
        if self.outcomes.get(report.nodeid, ("",))[0] == "failed":
            return
        if report.failed:
            self.outcomes[report.nodeid] = ("failed", "")
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.outcomes[report.nodeid] = ("skipped", reason.removeprefix("Skipped: "))
        elif report.when == "call":
            self.outcomes[report.nodeid] = ("passed", "")

    def table(self) -> str:
        """The Markdown table, one row per family in collection order, and the skip reasons."""
        families: list[str] = []
        by_cell: dict[tuple[str, str], list[tuple[str, str] | None]] = {}
        for nodeid, (family, check) in self.cells.items():
            if family not in families:
                families.append(family)
            by_cell.setdefault((family, check), []).append(self.outcomes.get(nodeid))
        reasons: list[str] = []
        rows = ["| family | " + " | ".join(CHECKS) + " |", "|---" * (len(CHECKS) + 1) + "|"]
        for family in families:
            cells = []
            for check in CHECKS:
                outcomes = by_cell.get((family, check))
                if not outcomes:
                    cells.append("-")
                elif any(o is not None and o[0] == "failed" for o in outcomes):
                    cells.append("FAIL")
                elif any(o is None for o in outcomes):
                    cells.append("not run")
                else:
                    skips = [o[1] for o in outcomes if o[0] == "skipped"]
                    for reason in skips:
                        if reason not in reasons:
                            reasons.append(reason)
                    marks = ", ".join(sorted({f"skip [{reasons.index(r) + 1}]" for r in skips}))
                    passed = len(skips) < len(outcomes)
                    cells.append(" + ".join(filter(None, ["pass" if passed else "", marks])))
            rows.append(f"| {family} | " + " | ".join(cells) + " |")
        notes = [f"- [{i + 1}] {reason}" for i, reason in enumerate(reasons)]
        return "\n".join(rows + ([""] + notes if notes else [])) + "\n"

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.write_sep("=", "model family coverage (outcomes of this run)")
        text = self.table()
        terminalreporter.write(text)
        if self.out is not None:
            self.out.write_text(text)
            terminalreporter.write_line(f"written to {self.out}")
