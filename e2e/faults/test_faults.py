"""The fault suite's short form: every scenario once, its bound asserted (CI runs this).

Each scenario starts its own processes on 127.0.0.1 (no cluster) and takes about its load's
duration plus a few seconds of start-up; ``python -m e2e.faults`` runs the long form and
writes docs/reliability.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.faults.scenarios import SCENARIOS, SHORT, Scenario


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name.replace(" ", "-") for s in SCENARIOS])
def test_fault_scenario_keeps_its_bound(scenario: Scenario, tmp_path: Path) -> None:
    row = scenario.run(SHORT, tmp_path)
    row.scenario = scenario.name
    print(row.describe())
    assert len(row.records) == int(SHORT.rate * SHORT.duration), "a request was not recorded"
    problems = scenario.bound(row)
    assert not problems, f"{scenario.name}: {problems}\n{row.describe()}"
