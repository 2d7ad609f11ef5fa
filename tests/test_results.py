"""The committed results/ rebuild from the committed logs alone, as a clean clone has them."""

from pathlib import Path

import pandas as pd
import pytest

from resnet_repro.cli import main

RESULTS = Path(__file__).resolve().parents[1] / "results"
RUN_TABLES = sorted(RESULTS.glob("*/*-runs.csv"))


def test_results_hold_rendered_artifacts():
    assert RUN_TABLES, "results/ holds no rendered artifact"


@pytest.mark.parametrize("runs_table", RUN_TABLES, ids=lambda p: p.name)
def test_every_run_of_a_committed_artifact_has_its_logs_in_results_runs(runs_table):
    for run_id in pd.read_csv(runs_table)["run_id"]:
        logs = RESULTS / "runs" / run_id
        assert (logs / "run.json").is_file() and (logs / "metrics.csv").is_file(), f"{runs_table.name}: {run_id}"


def test_report_rebuilds_the_committed_tables_from_the_committed_logs(tmp_path):
    assert main(["report", "--runs-dir", str(RESULTS / "runs"), "--results-dir", str(tmp_path)]) == 0
    for committed in [*RESULTS.glob("*/*-runs.csv"), *RESULTS.glob("*/*-curves.csv")]:
        rebuilt = tmp_path / committed.parent.name / committed.name
        assert rebuilt.read_text() == committed.read_text(), committed.name
    for page in [p.with_suffix(".md") for p in RUN_TABLES]:
        if page.exists():
            assert (tmp_path / page.parent.name / page.name).read_text() == page.read_text(), page.name
