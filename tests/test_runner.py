"""Each artifact's smoke profile end to end (train, log, render) into a temporary results directory."""

import builtins
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from resnet_repro.cli import main
from resnet_repro.data.cifar10 import DataConfig
from resnet_repro.experiment import plan_variants
from resnet_repro.report import render_experiment, write_results_index
from resnet_repro.runner import PendingRun, load_experiment, outcome, train_runs
from resnet_repro.spec import Schedule, TrainSpec, run_id
from resnet_repro.training import Hardware

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_cifar_archive, cifar_cache_root):
    """runs/ and results/ shared by this module's tests, plus the common flags of a smoke run."""
    base = tmp_path_factory.mktemp("suite")
    flags = [
        "--profile",
        "smoke",
        "--data",
        str(tiny_cifar_archive),
        "--data-root",
        str(cifar_cache_root),
        "--runs-dir",
        str(base / "runs"),
        "--results-dir",
        str(base / "results"),
        "--wandb",
        "off",
        "--no-progress",
    ]
    return base, flags


@pytest.fixture(scope="module")
def fig1(workspace):
    base, flags = workspace
    assert main(["run", "fig1", *flags]) == 0
    return base


def test_fig1_smoke_writes_figure_curves_and_provenance(fig1):
    out = fig1 / "results" / "fig1"
    for name in ("fig1-smoke.png", "fig1-smoke.pdf", "fig1-smoke.md", "fig1-smoke-curves.csv", "fig1-smoke-runs.csv"):
        assert (out / name).stat().st_size > 0, name
    provenance = json.loads((out / "fig1-smoke-provenance.json").read_text())
    assert provenance["profile"] == "smoke" and len(provenance["runs"]) == 2 and provenance["missing_runs"] == []
    curves = pd.read_csv(out / "fig1-smoke-curves.csv")
    assert set(curves["model"]) == {"plain20", "plain56"}
    assert curves["step"].max() == 6  # the last iterate is logged and evaluated
    assert "profile: smoke" in (out / "fig1-smoke.md").read_text()
    index = (fig1 / "results" / "README.md").read_text()
    assert "## fig1 (smoke profile)" in index and "fig1/fig1-smoke.png" in index


def test_fig6_reuses_finished_runs(fig1, workspace, capsys):
    base, flags = workspace
    stamps = {p: p.stat().st_mtime_ns for p in (base / "runs").glob("*/run.json")}
    assert main(["run", "fig6", *flags]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier, not retrained") == 2  # plain20 and plain56 came from fig1
    for path, stamp in stamps.items():
        assert path.stat().st_mtime_ns == stamp
    assert len(list((base / "runs").glob("*/run.json"))) == 4
    assert (base / "results" / "fig6" / "fig6-smoke.png").exists()


def test_table6_holds_the_paper_column_and_ours(fig1, workspace):
    base, flags = workspace
    assert main(["run", "table6", *flags]) == 0
    table = pd.read_csv(base / "results" / "table6" / "table6-smoke.csv")
    resnet20 = table[(table["method"] == "ResNet") & (table["# layers"] == "20")].iloc[0]
    assert resnet20["paper error (%)"] == "8.75"
    assert 0 <= float(resnet20["ours mean"]) <= 100 and resnet20["seeds"] == 1
    resnet110 = table[(table["method"] == "ResNet") & (table["# layers"] == "110")].iloc[0]
    assert resnet110["paper error (%)"] == "6.43 (6.61±0.16)" and resnet110["note"] == "not run"
    assert "Maxout [10]" in set(table["method"])


def test_report_rebuilds_identical_tables_from_logs(fig1, workspace):
    base, flags = workspace
    assert main(["run", "table6", *flags]) == 0  # everything cached: renders only
    results = base / "results"
    tables = lambda: {p.name: p.read_text() for p in [*results.glob("*/*.csv"), *results.glob("*/*.md")]}  # noqa: E731
    before = tables()
    for path in results.glob("*/*"):
        if path.is_file():
            path.unlink()
    assert main(["report", "--runs-dir", str(base / "runs"), "--results-dir", str(results)]) == 0
    # Every page rendered before comes back identical (report also renders, as partial, the artifacts that
    # share these runs: Fig. 7 draws Fig. 6's runs, the shortcut ablation's option-A arm is Table 6's run).
    after = tables()
    assert {name: after.get(name) for name in before} == before and len(before) >= 10
    assert "partial: 2 of 6 runs" in after["ablation_shortcuts-smoke.md"]  # A of ResNet-20 and -56
    # The copied records alone rebuild the same tables (what a clean clone has: results/runs/, no runs/).
    rebuilt = base / "rebuilt"
    assert main(["report", "--runs-dir", str(results / "runs"), "--results-dir", str(rebuilt)]) == 0
    assert {
        p.name: p.read_text() for p in [*rebuilt.glob("*/*.csv"), *rebuilt.glob("*/*.md")] if p.parent.name != "runs"
    } == after


def test_only_and_unknown_names_are_one_line_errors(fig1, workspace, capsys):
    base, flags = workspace
    assert main(["run", "fig1", *flags, "--only", "resnet1202"]) == 2
    assert main(["run", "fig99", *flags]) == 2
    assert main(["run", "fig1", *flags[:1], "turbo", *flags[2:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "plain20-s0-" in err[0] and "fig1" in err[1] and "paper, quick, mid, smoke" in err[2]


def test_report_without_runs_is_a_user_error(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main(["report", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_experiment_script_equals_the_cli(fig1, workspace):
    base, flags = workspace
    done = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "fig1.py"), *flags],
        capture_output=True,
        text=True,
        cwd=base,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("finished earlier, not retrained") == 2


def test_list_prints_runs_and_cost(capsys):
    assert main(["run", "--list", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert "plain56-s0-" in out and "PFLOP" in out and "not in this profile: " in out


def test_list_with_an_unknown_profile_is_one_line_exit_2(capsys):
    assert main(["run", "--list", "--profile", "bogus"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "resnet-repro run: error: unknown profile 'bogus': choose one of mid, paper, quick, smoke"
    ]
    assert captured.out == ""


@pytest.mark.parametrize("command", ["train resnet18", "run table2"])
def test_subset_0_is_one_line_before_any_net_is_built(capsys, tmp_path, command):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        argv = [*command.split(), "--subset", "0", "--wandb", "off", "--out" if "train" in command else "--runs-dir"]
        assert main([*argv, str(tmp_path / "runs")]) == 2
    assert [str(w.message) for w in caught] == []  # torch's "Initializing zero-element tensors is a no-op"
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"resnet-repro {command.split()[0]}: error: --subset must be at least 1 class, got 0"]
    assert not (tmp_path / "runs").exists()


def test_notebook_runs_on_smoke_results(fig1, workspace):
    nbformat = pytest.importorskip("nbformat", reason="the dev extra installs nbformat")
    from nbclient import NotebookClient

    base, flags = workspace
    main(["run", "table6", *flags])
    notebook = nbformat.read(REPO / "notebooks" / "results.ipynb", as_version=4)
    os.environ["RESNET_REPRO_RESULTS"], os.environ["RESNET_REPRO_PROFILE"] = str(base / "results"), "smoke"
    try:
        NotebookClient(
            notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(base)}}
        ).execute()
    finally:
        del os.environ["RESNET_REPRO_RESULTS"], os.environ["RESNET_REPRO_PROFILE"]
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = json.dumps([o.get("data", {}).get("text/plain", o.get("text", "")) for o in outputs])
    assert "plain56" in text and "8.75" in text


def test_cached_runs_are_not_reused_for_another_data_copy(fig1, workspace, tmp_path, capsys):
    import tarfile

    from conftest import write_imagefolder

    base, flags = workspace
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tf:
        tf.add(write_imagefolder(tmp_path / "other", seed=7), arcname="other")
    flags = list(flags)
    flags[flags.index("--data") + 1] = str(other)
    assert main(["run", "fig1", *flags]) == 2
    assert "was trained with other settings (data sha256 " in capsys.readouterr().err


def test_cached_runs_are_not_reused_for_another_device_count(fig1, workspace, capsys):
    base, flags = workspace
    record_path = next((base / "runs").glob("plain20-*/run.json"))
    record = json.loads(record_path.read_text())
    try:
        record_path.write_text(json.dumps({**record, "world_size": 2}))  # as if trained with --devices 2
        assert main(["run", "fig1", *flags]) == 2
        assert "was trained with other settings (devices 2 -> 1)" in capsys.readouterr().err
    finally:
        record_path.write_text(json.dumps(record))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_stop_after_starts_no_run_past_the_deadline_exits_3_and_the_same_command_finishes(
    workspace, tmp_path, capsys, jobs
):
    """A time-limited job (a 10-minute slot, SLURM's --time) starts no run once its time is up and says to
    run again (exit 3); a run already going stops with a checkpoint (test_training's deadline test)."""
    _, flags = workspace
    flags = [
        *flags[: flags.index("--runs-dir")],
        "--runs-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(tmp_path / "results"),
        *flags[flags.index("--wandb") :],
        "--jobs",
        jobs,
    ]
    assert main(["run", "fig1", *flags, "--stop-after", "0"]) == 3
    out = capsys.readouterr().out
    assert "--stop-after time limit reached with 2 run(s) unfinished" in out
    assert "none had started, so nothing was saved" in out and "checkpoint" not in out  # no run wrote one
    assert not list((tmp_path / "runs").glob("*/run.json")) and not (tmp_path / "results").exists()
    assert main(["run", "fig1", *flags]) == 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/run.json")]
    assert sorted((r["status"], r["iterations"]) for r in records) == [("finished", 6), ("finished", 6)]
    assert (tmp_path / "results" / "fig1" / "fig1-smoke.png").exists()


def test_a_ctrl_c_in_one_invocation_does_not_stop_the_next(workspace, tmp_path, send_signal):
    """A notebook or a script calling `main` twice in one process: Ctrl-C stops the first invocation's run
    (exit 130), and the next invocation resumes and finishes it instead of starting nothing."""
    _, flags = workspace
    flags = [*flags, "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    command = ["run", "fig6", *flags, "--only", "resnet20", "--threads", "1"]
    with send_signal(signal.SIGINT, after=3):
        assert main(command) == 130
    [record_path] = (tmp_path / "runs").glob("*/run.json")
    assert json.loads(record_path.read_text())["status"] == "interrupted"
    assert main(command) == 0
    record = json.loads(record_path.read_text())
    assert (record["status"], record["iterations"]) == ("finished", 6)


def test_stop_after_rejects_a_malformed_duration(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "fig1", "--stop-after", "ten minutes"])
    assert exit_info.value.code == 2 and "expected a duration such as 540, 540s, 9m or 1.5h" in capsys.readouterr().err


def test_results_index_links_the_pages_of_other_results(fig1):
    from resnet_repro.report import write_results_index

    results = fig1 / "results"
    (results / "benchmarks").mkdir(exist_ok=True)
    (results / "benchmarks" / "throughput.md").write_text("# Training throughput\n")
    (results / "benchmarks" / "throughput.csv").write_text("model\n")
    index = write_results_index(results).read_text()
    assert "- [benchmarks/](benchmarks/): [throughput.md](benchmarks/throughput.md)" in index
    assert "## fig1 (smoke profile)" in index  # the artifacts are still indexed


def copy_fig1_runs(fig1: Path, dest: Path) -> dict[str, Path]:
    """A copy of the fig1 smoke runs (plain20, plain56) to spoil: {model: run directory}."""
    experiment = load_experiment("fig1")
    copies = {}
    for _, spec in plan_variants(experiment, experiment.profile("smoke")):
        copies[spec.model] = dest / run_id(spec)
        shutil.copytree(fig1 / "runs" / run_id(spec), copies[spec.model])
    return copies


def test_report_into_an_unwritable_results_dir_is_one_line(fig1, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    real_open = builtins.open

    def denied(file, mode="r", *args, **kwargs):
        if "w" in mode and Path(file).resolve().is_relative_to(results.resolve()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("resnet_repro.files.open", denied, raising=False)
    args = ["report", "fig1", "--profile", "smoke", "--runs-dir", str(fig1 / "runs"), "--results-dir", str(results)]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resnet-repro report: error: cannot write {results}/"), lines
    assert f": {os.strerror(errno.EROFS)}; make it writable or write elsewhere" in lines[0]


@pytest.mark.parametrize("filename", ["metrics.csv", "run.json"])
def test_report_with_a_corrupt_run_log_is_one_line_naming_it(fig1, tmp_path, capsys, filename):
    corrupt = copy_fig1_runs(fig1, tmp_path / "runs")["plain56"] / filename
    with corrupt.open("ab") as f:
        f.write(b"0,0.1,7,1,2,3,4,5,6,7,8,9,10,11,12,13,14\n\xff\xfe" if filename == "metrics.csv" else b"}{")
    args = ["report", "fig1", "--profile", "smoke", "--runs-dir", str(tmp_path / "runs")]
    assert main([*args, "--results-dir", str(tmp_path / "results")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnet-repro report: error: "), lines
    assert str(corrupt) in lines[0]


def spoil_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def spoil_log(path: Path, change) -> None:
    path.write_bytes(change(path.read_bytes()))


@pytest.mark.parametrize(
    "filename, spoil, problem",
    [
        ("run.json", lambda p: spoil_json(p, lambda r: [1, 2, 3]), "it holds a list, not an object of fields"),
        ("run.json", lambda p: spoil_json(p, lambda r: {}), "`run_id` is missing"),
        (
            "run.json",
            lambda p: spoil_json(p, lambda r: {k: v for k, v in r.items() if k != "spec"}),
            "`spec` is missing",
        ),
        ("run.json", lambda p: spoil_json(p, lambda r: {**r, "final": None}), "`final` should be an object, got null"),
        ("run.json", lambda p: spoil_json(p, lambda r: {**r, "spec": "plain56"}), "`spec` should be an object"),
        ("metrics.csv", lambda p: spoil_log(p, lambda b: b.split(b"\n", 1)[1]), "its first line is not the header"),
        ("metrics.csv", lambda p: spoil_log(p, lambda b: b.replace(b",,", b",x,", 1)), "not a number"),
        ("metrics.csv", lambda p: spoil_log(p, lambda b: b[:-7]), "its last line is cut off"),
        ("metrics.csv", lambda p: spoil_log(p, lambda b: b""), "it is empty"),
    ],
    ids=["a list", "empty object", "no spec", "final null", "spec a string", "no header", "a word", "cut off", "empty"],
)
def test_report_over_a_damaged_run_log_is_one_line_naming_it_and_writes_nothing(
    fig1, tmp_path, capsys, filename, spoil, problem
):
    damaged = copy_fig1_runs(fig1, tmp_path / "runs")["plain56"] / filename
    spoil(damaged)
    args = ["report", "fig1", "--profile", "smoke", "--runs-dir", str(tmp_path / "runs")]
    assert main([*args, "--results-dir", str(tmp_path / "results")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resnet-repro report: error: {damaged} is not a "), lines
    assert problem in lines[0]
    assert not (tmp_path / "results").exists()


def test_report_says_a_diverged_run_diverged_at_its_iteration(fig1, tmp_path):
    runs = copy_fig1_runs(fig1, tmp_path / "runs")
    record_path = runs["plain56"] / "run.json"
    record = json.loads(record_path.read_text())
    for key in ("iterations", "finished", "stopped_by"):  # a diverged run never gets these
        record.pop(key, None)
    record_path.write_text(json.dumps({**record, "status": "diverged", "diverged_at": 3, "final": {}}))
    experiment = load_experiment("fig1")
    results = tmp_path / "results"
    render_experiment(experiment, experiment.profile("smoke"), tmp_path / "runs", results)
    page = (results / "fig1" / "fig1-smoke.md").read_text()
    assert f"partial: 1 of 2 runs; {runs['plain56'].name} diverged at iteration 3" in page
    index = write_results_index(results).read_text()
    assert f"{runs['plain56'].name} diverged at iteration 3" in index and "not finished" not in index


def test_outcome_says_how_a_run_ended():
    assert outcome({"status": "finished", "final": {"test/error": 8.754}}) == "finished, test error 8.75%"
    assert outcome({"status": "diverged", "diverged_at": 12, "final": {}}) == "diverged at iteration 12"
    assert outcome({"status": "interrupted", "iterations": 500, "final": {}}) == "interrupted at iteration 500"
    assert outcome({"status": "not started", "final": {}}) == "not started"


def test_train_runs_reports_a_diverged_run_at_its_iteration(tiny_cifar_archive, cifar_cache_root, tmp_path, capsys):
    spec = TrainSpec(
        model="resnet8",
        schedule=Schedule(max_iters=8, milestones=(4, 6), lr=1e6),
        batch_size=16,
        data=DataConfig(data=str(tiny_cifar_archive), root=str(cifar_cache_root), full=False),
        log_every=2,
        eval_every=4,
        checkpoint_every=4,
    )
    threads = torch.get_num_threads()
    try:
        pending = PendingRun(spec, tmp_path / "runs" / run_id(spec), False, Hardware(accelerator="cpu", threads=1))
        [record] = train_runs([pending], {"wandb": "off", "progress": False})
    finally:
        torch.set_num_threads(threads)
    assert record["status"] == "diverged" and record["diverged_at"] >= 1
    assert outcome(record) == f"diverged at iteration {record['diverged_at']}"
    assert f"{pending.run_dir}: diverged: " in capsys.readouterr().err


def test_run_where_every_run_diverged_says_so_and_what_to_change_with_exit_1_and_again_on_a_rerun(
    workspace, tmp_path, monkeypatch, capsys
):
    import dataclasses

    from resnet_repro import experiment

    smoke = experiment.PROFILES["smoke"]
    monkeypatch.setitem(
        experiment.PROFILES, "smoke", dataclasses.replace(smoke, schedule=dataclasses.replace(smoke.schedule, lr=1e6))
    )
    _, flags = workspace
    flags = [*flags, "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    for attempt in ("first", "rerun"):
        assert main(["run", "fig1", *flags, "--threads", "1"]) == 1, attempt
        said = capsys.readouterr().err.strip().splitlines()[-1]
        assert said.startswith("fig1 (smoke): every run diverged (plain20-s0-"), (attempt, said)
        assert " at iteration 3, plain56-s0-" in said and "train them first" not in said
        assert "a lower --lr or warm-up (resnet-repro train plain20 --lr 0.01" in said
    assert not (tmp_path / "results").exists()


def test_run_while_another_process_trains_one_of_its_runs_is_not_done(fig1, workspace, tmp_path, capsys):
    """Two `run fig1` at once: the second trains what is free, and says which run the first still holds, exit 2."""
    from resnet_repro.rundir import RunDir

    _, flags = workspace
    flags = [*flags, "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    held = copy_fig1_runs(fig1, tmp_path / "runs")["plain56"]
    shutil.rmtree(held)  # not trained yet: the other process has just begun it
    holder = RunDir(held)  # flock conflicts between two open files, so this stands in for the other process
    holder.lock()
    try:
        assert main(["run", "fig1", *flags, "--threads", "1"]) == 2
    finally:
        holder.unlock()
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resnet-repro run: error: {held} is being trained by another "), (
        lines
    )
    assert f"(pid {os.getpid()} on " in lines[0] and "fig1 is not rendered" in lines[0]
    assert "done" not in captured.out and not (tmp_path / "results").exists()
    assert main(["run", "fig1", *flags, "--threads", "1"]) == 0  # once it is free, the same command finishes it
    assert "fig1 (smoke) done in " in capsys.readouterr().out


def test_report_draws_a_run_in_progress_up_to_where_it_stopped(fig1, tmp_path):
    # A long run continued over several sessions: stopped at its --stop-after limit part-way.
    runs = copy_fig1_runs(fig1, tmp_path / "runs")
    for model in ("plain20", "plain56"):
        record_path = runs[model] / "run.json"
        record = json.loads(record_path.read_text())
        record_path.write_text(
            json.dumps({**record, "status": "interrupted", "iterations": 3, "stopped_by": "time limit", "final": {}})
        )
    experiment = load_experiment("fig1")
    results = tmp_path / "results"
    written = render_experiment(experiment, experiment.profile("smoke"), tmp_path / "runs", results)
    assert results / "fig1" / "fig1-smoke.png" in written
    page = (results / "fig1" / "fig1-smoke.md").read_text()
    assert "partial: 0 of 2 runs" in page
    assert (
        f"in progress, drawn up to where it stopped (no final error yet): {runs['plain20'].name} at iteration 3" in page
    )
    curves = pd.read_csv(results / "fig1" / "fig1-smoke-curves.csv")
    assert set(curves["run_id"]) == {runs["plain20"].name, runs["plain56"].name}
    assert (results / "runs" / runs["plain20"].name / "metrics.csv").is_file()  # its logs kept, to rebuild the page
    # The departures of the runs drawn are listed although none has finished: not "followed the paper's protocol".
    provenance = json.loads((results / "fig1" / "fig1-smoke-provenance.json").read_text())
    assert "schedule" in {d["what"] for d in provenance["deviations"]}


def test_report_keep_checkpoints_carries_only_a_run_in_progress(fig1, tmp_path):
    # A run continued on another machine (or in a later session on a fresh one) travels in results/runs/.
    runs = copy_fig1_runs(fig1, tmp_path / "runs")
    record_path = runs["plain20"] / "run.json"
    finished = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**finished, "status": "interrupted", "iterations": 3, "final": {}}))
    results = tmp_path / "results"
    report = [
        "report",
        "fig1",
        "--profile",
        "smoke",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(results),
    ]

    assert main([*report, "--keep-checkpoints"]) == 0
    kept = results / "runs" / runs["plain20"].name / "checkpoints" / "last.ckpt"
    assert kept.read_bytes() == (runs["plain20"] / "checkpoints" / "last.ckpt").read_bytes()
    assert (runs["plain56"] / "checkpoints" / "last.ckpt").exists()  # finished: its checkpoint stays behind
    assert not (results / "runs" / runs["plain56"].name / "checkpoints").exists()

    # Once the run has finished (or is reported without the flag), the copy goes: logs and checkpoint agree.
    record_path.write_text(json.dumps(finished))
    assert main([*report, "--keep-checkpoints"]) == 0
    assert not kept.parent.exists()
    shutil.rmtree(results / "runs")
    record_path.write_text(json.dumps({**finished, "status": "interrupted", "iterations": 2, "final": {}}))
    assert main([*report, "--keep-checkpoints"]) == 0 and kept.exists()
    assert main(report) == 0 and kept.exists()  # the same state without the flag: the only copy stays
    record_path.write_text(
        json.dumps({**finished, "status": "diverged", "iterations": 3, "diverged_at": 3, "final": {}})
    )
    assert main([*report, "--keep-checkpoints"]) == 0 and not kept.parent.exists()  # nothing worth resuming


def interrupt_at(run_dir: Path, iterations: int, finished: dict, state: bytes) -> None:
    """Make `run_dir` a run stopped at `iterations` whose checkpoint holds `state`."""
    (run_dir / "run.json").write_text(
        json.dumps({**finished, "status": "interrupted", "iterations": iterations, "final": {}})
    )
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(state)


def test_report_keep_checkpoints_never_moves_a_kept_run_backwards(fig1, tmp_path, capsys):
    # The sequence that lost a day's training: report from X, continue in Y, report from Y, lose Y, report X.
    x = copy_fig1_runs(fig1, tmp_path / "x")["plain20"]
    finished = json.loads((x / "run.json").read_text())
    interrupt_at(x, 3, finished, b"state at 3")
    results = tmp_path / "results"
    kept = results / "runs" / x.name
    report = ["report", "fig1", "--profile", "smoke", "--results-dir", str(results), "--keep-checkpoints"]

    assert main([*report, "--runs-dir", str(tmp_path / "x")]) == 0
    y = tmp_path / "y" / x.name
    shutil.copytree(x, y)
    interrupt_at(y, 5, finished, b"state at 5")
    (y / "metrics.csv").rename(y / "metrics-0.csv")  # a resumed run: its first part kept, a second begun
    shutil.copy2(y / "metrics-0.csv", y / "metrics.csv")
    assert main([*report, "--runs-dir", str(tmp_path / "y")]) == 0
    assert (kept / "checkpoints" / "last.ckpt").read_bytes() == b"state at 5"
    shutil.rmtree(tmp_path / "y")
    pages = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    capsys.readouterr()

    assert main([*report, "--runs-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(kept) in err[0] and str(x) in err[0], err
    assert "iteration 5 (interrupted)" in err[0] and "iteration 3 (interrupted)" in err[0]
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == pages  # nothing written, nothing lost

    # A finished copy is later than any interrupted one, whatever its iteration count.
    elsewhere = ["report", "fig1", "--profile", "smoke", "--results-dir", str(tmp_path / "r2"), "--runs-dir"]
    assert main([*elsewhere, str(fig1 / "runs")]) == 0
    assert main([*elsewhere, str(tmp_path / "x")]) == 2


def test_plain_report_keeps_the_checkpoint_of_an_unfinished_run(fig1, tmp_path, capsys):
    x = copy_fig1_runs(fig1, tmp_path / "x")["plain20"]
    finished = json.loads((x / "run.json").read_text())
    interrupt_at(x, 3, finished, b"state at 3")
    results = tmp_path / "results"
    kept = results / "runs" / x.name / "checkpoints" / "last.ckpt"
    report = ["report", "fig1", "--profile", "smoke", "--results-dir", str(results), "--runs-dir", str(tmp_path / "x")]
    assert main([*report, "--keep-checkpoints"]) == 0

    interrupt_at(x, 5, finished, b"state at 5")  # trained on, and reported without the flag
    capsys.readouterr()
    assert main(report) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--keep-checkpoints" in err[0] and str(kept) in err[0], err
    assert kept.read_bytes() == b"state at 3"
    assert json.loads((kept.parents[1] / "run.json").read_text())["iterations"] == 3  # logs and state agree

    (x / "run.json").write_text(json.dumps(finished))  # once it has finished, its logs say all there is
    assert main(report) == 0 and not kept.parent.exists()


def test_report_leaves_exactly_the_parts_of_the_copied_run(fig1, tmp_path):
    runs = copy_fig1_runs(fig1, tmp_path / "runs")
    results = tmp_path / "results"
    report = [
        "report",
        "fig1",
        "--profile",
        "smoke",
        "--results-dir",
        str(results),
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    assert main(report) == 0
    kept = results / "runs" / runs["plain20"].name
    shutil.copy2(kept / "metrics.csv", kept / "metrics-0.csv")  # a part of an earlier, longer history
    shutil.copy2(kept / "metrics.csv", kept / "metrics-1.csv")
    assert main(report) == 0
    assert sorted(p.name for p in kept.glob("metrics*.csv")) == sorted(
        p.name for p in runs["plain20"].glob("metrics*.csv")
    )
