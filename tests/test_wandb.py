"""Weights & Biases through Lightning's WandbLogger, offline (no network here): one finished run per model."""

import pytest

from resnet_repro.cli import main


def test_experiment_runs_land_as_separate_offline_wandb_runs(
    tmp_path, tiny_cifar_archive, cifar_cache_root, monkeypatch
):
    pytest.importorskip("wandb", reason="wandb is a dependency of the package; this checks its offline path")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    import lightning.pytorch.loggers as loggers

    made = []
    real = loggers.WandbLogger

    def recording_logger(**kwargs):
        made.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(loggers, "WandbLogger", recording_logger)
    runs = tmp_path / "runs"
    code = main(
        [
            "run",
            "fig1",
            "--profile",
            "smoke",
            "--data",
            str(tiny_cifar_archive),
            "--data-root",
            str(cifar_cache_root),
            "--runs-dir",
            str(runs),
            "--results-dir",
            str(tmp_path / "results"),
            "--wandb",
            "offline",
            "--no-progress",
        ]
    )
    assert code == 0
    # Grouped by artifact and profile, named by run id, offline without a login.
    assert [(m["group"], m["offline"]) for m in made] == [("fig1-smoke", True)] * 2
    assert sorted(m["name"].split("-")[0] for m in made) == ["plain20", "plain56"]
    offline = sorted(runs.glob("*/wandb/offline-run-*"))
    # One W&B run per training run, each in its own run directory: the first was finished before the second began.
    assert len(offline) == 2
    assert {p.parents[1].name.split("-")[0] for p in offline} == {"plain20", "plain56"}
    # The rendered figure and table go to the same group as a "report" run.
    assert len(list(runs.glob("wandb/offline-run-*"))) == 1
    for run_dir in offline:
        assert list(run_dir.glob("*.wandb")), f"no W&B log in {run_dir}"
