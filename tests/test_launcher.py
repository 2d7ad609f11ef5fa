"""--launcher: one submitit job per run, requeued on the scheduler's warning signal, then the artifact rendered once.

The local executor runs the jobs as subprocesses here, the whole path from submission to report; SLURM's side is
checked on the sbatch scripts submitit writes (a stand-in sbatch takes them, since no cluster is reachable).
"""

import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from resnet_repro import launcher
from resnet_repro.cli import main
from resnet_repro.experiment import plan_runs
from resnet_repro.records import read_run
from resnet_repro.rundir import RunDir
from resnet_repro.runner import load_experiment
from resnet_repro.spec import run_id

submitit = pytest.importorskip("submitit", reason="--launcher needs submitit: pip install -e '.[dev]'")

# What the tests' jobs run instead of `python -m resnet_repro`: the same command, except that the run named by
# $PAUSE_RUN waits before its iteration $PAUSE_AT + 1 until a stop signal reaches it, the first time only, after
# writing the pid of its job's process to $PAUSE_FILE. A signal then always lands mid-run, however slow the machine.
PAUSING_ENTRY = """
import os, sys, time
from pathlib import Path

from resnet_repro.cli import main
from resnet_repro.module import ClassifierModule

marker, at, run = Path(os.environ["PAUSE_FILE"]), int(os.environ["PAUSE_AT"]), os.environ["PAUSE_RUN"]
original = ClassifierModule.on_train_batch_start


def pause(self, batch, batch_idx):
    if self.global_step == at and any(arg.startswith(run) for arg in sys.argv) and not marker.exists():
        stop = next(callback for callback in self.trainer.callbacks if hasattr(callback, "interrupted"))
        marker.with_suffix(".tmp").write_text(str(os.getppid()))  # this run's job: submitit's process
        marker.with_suffix(".tmp").rename(marker)
        while not stop.interrupted:
            time.sleep(0.05)
    return original(self, batch, batch_idx)


ClassifierModule.on_train_batch_start = pause
sys.exit(main(sys.argv[1:]))
"""


def flags_for(base: Path, archive: Path, cache: Path) -> list[str]:
    return [
        "--profile",
        "smoke",
        "--data",
        str(archive),
        "--data-root",
        str(cache),
        "--runs-dir",
        str(base / "runs"),
        "--results-dir",
        str(base / "results"),
        "--wandb",
        "off",
        "--no-progress",
        "--threads",
        "1",  # one thread per process on two shared cores, and the same numerics in a job as in this process
    ]


@pytest.fixture
def workspace(tmp_path, tiny_cifar_archive, cifar_cache_root, one_torch_thread):
    return tmp_path, flags_for(tmp_path, tiny_cifar_archive, cifar_cache_root)


@pytest.fixture
def fig1_ids():
    experiment = load_experiment("fig1")
    return {spec.model: run_id(spec) for spec in plan_runs(experiment, experiment.profile("smoke"))}


@pytest.fixture
def paused(tmp_path, monkeypatch):
    """Jobs run PAUSING_ENTRY, which pauses plain20 after 3 iterations: `paused(command)` waits for that and
    returns the pid of its job's process (the command is a Future, which must not end first)."""
    script, marker = tmp_path / "pausing_entry.py", tmp_path / "paused"
    script.write_text(PAUSING_ENTRY)
    monkeypatch.setattr(launcher, "ENTRY_POINT", (str(script),))
    for name, value in {"PAUSE_FILE": marker, "PAUSE_AT": 3, "PAUSE_RUN": "plain20-s0-"}.items():
        monkeypatch.setenv(name, str(value))

    def wait(command) -> int:
        while not marker.exists():
            if command.done():
                pytest.fail(f"the command ended (status {command.result()}) before plain20 paused")
            time.sleep(0.1)
        return int(marker.read_text())

    return wait


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def parts(run_dir: Path) -> list[tuple]:
    record = json.loads((run_dir / "run.json").read_text())
    return [(p["from_iteration"], p["to_iteration"], p["status"]) for p in record["parts"]]


def test_local_jobs_requeue_a_warned_run_which_ends_as_if_uninterrupted_and_render_once(
    workspace, fig1_ids, paused, capfd
):
    """The warning signal (what SLURM sends before --time and on preemption) reaches plain20's job mid-run: the
    job stops the run with SIGTERM (it saves last.ckpt at iteration 4), submitit requeues the job, and the next
    attempt resumes the run to the numbers of a run never interrupted; then the artifact is rendered, once."""
    base, flags = workspace
    reference = base / "reference"
    assert main(["run", "fig1", *flags, "--runs-dir", str(reference), "--only", "plain20"]) == 0
    with ThreadPoolExecutor(1) as pool:
        command = pool.submit(main, ["run", "fig1", *flags, "--launcher", "local", "--max-parallel", "2"])
        os.kill(paused(command), launcher.preemption_signal())
        assert command.result() == 0
    out = capfd.readouterr().out
    plain20, plain56 = base / "runs" / fig1_ids["plain20"], base / "runs" / fig1_ids["plain56"]
    assert f"{plain20.name}: finished, test error" in out and "requeued 1x and resumed" in out
    assert out.count("requeued") == 1 and f"{plain56.name}: finished, test error" in out
    assert parts(plain20) == [(0, 4, "interrupted"), (4, 6, "finished")]
    assert parts(plain56) == [(0, 6, "finished")]
    logs = "".join(p.read_text() for p in (base / "runs" / ".submitit" / "fig1-smoke").glob("*_log.*"))
    assert "requeued, to continue from its checkpoint" in logs and "Requeued job" in logs  # ours, then submitit's
    # The same numbers as a run never interrupted: every logged iteration's curves, and the final errors.
    (got, got_curves), (want, want_curves) = read_run(plain20), read_run(reference / fig1_ids["plain20"])
    numbers = ["step", "lr", "train/loss", "train/error", "test/error", "test/loss"]  # not images/s
    pd.testing.assert_frame_equal(got_curves[numbers], want_curves[numbers], rtol=1e-5, atol=1e-6)
    assert got["final"]["test/error"] == pytest.approx(want["final"]["test/error"], abs=1e-6)
    assert got["final"]["test/loss"] == pytest.approx(want["final"]["test/loss"], rel=1e-5)
    # Rendered once, by this command after both jobs, from both runs; no job rendered.
    assert out.count("fig1 (smoke) done in") == 1 and "done in" not in logs
    provenance = json.loads((base / "results" / "fig1" / "fig1-smoke-provenance.json").read_text())
    assert len(provenance["runs"]) == 2 and provenance["missing_runs"] == []
    assert (base / "results" / "fig1" / "fig1-smoke.png").stat().st_size > 0


def test_sigterm_stops_a_local_job_unrequeued_status_shows_where_and_a_resubmission_continues(
    workspace, fig1_ids, paused, capfd
):
    """A plain SIGTERM (`kill`, `scancel`) stops the run with a checkpoint but does not requeue its job (only the
    warning signal does); --status says where the run stands; the same command submits it again and it continues."""
    base, flags = workspace
    submit = ["run", "fig1", *flags, "--launcher", "local", "--only", "plain20"]
    with ThreadPoolExecutor(1) as pool:
        command = pool.submit(main, submit)
        os.kill(parent_of(paused(command)), signal.SIGTERM)  # the local job's controller, which passes it on
        assert command.result() == 3  # work left: the same command again continues
    out = capfd.readouterr().out
    plain20 = base / "runs" / fig1_ids["plain20"]
    assert f"{plain20.name}: interrupted at iteration 4 of 6 (SIGTERM): stopped by SIGTERM" in out
    assert "requeued" not in out and "done in" not in out
    assert main(["run", "fig1", *flags, "--status"]) == 0
    status = capfd.readouterr().out.splitlines()
    assert status[1].split() == [plain20.name, *"interrupted at iteration 4 of 6 (SIGTERM)".split()]
    assert status[2].split() == [fig1_ids["plain56"], "pending"] and status[3].strip() == "1 interrupted, 1 pending"
    assert main(submit) == 0
    assert parts(plain20) == [(0, 4, "interrupted"), (4, 6, "finished")]
    assert "finished, test error" in capfd.readouterr().out


def test_status_tells_each_state_from_the_runs_directory_alone(workspace, fig1_ids, capsys):
    base, flags = workspace
    experiment = load_experiment("fig1")
    spec = plan_runs(experiment, experiment.profile("smoke"))[0].to_dict()
    runs = base / "states"
    records = {
        "finished": {"status": "finished", "iterations": 6, "final": {"test/error": 12.5}},
        "diverged": {"status": "diverged", "diverged_at": 5, "final": {}},
        "interrupted": {"status": "interrupted", "iterations": 4, "stopped_by": "SIGTERM", "final": {}},
        "killed": {"status": "running", "final": {}},  # run.json written at the start, nobody holds the lock
        "running": {"status": "interrupted", "iterations": 4, "final": {}},  # resumed by a live process
    }
    for name, fields in records.items():
        RunDir(runs / name).path.mkdir(parents=True)
        RunDir(runs / name).write_record({"run_id": name, "spec": spec, **fields})
    holder = RunDir(runs / "running")
    holder.lock()
    try:
        states = {name: launcher.run_state(runs / name) for name in [*records, "pending"]}
    finally:
        holder.unlock()
    assert {name: (s.kind, s.text) for name, s in states.items()} == {
        "finished": ("finished", "finished, test error 12.50%"),
        "diverged": ("diverged", "diverged at iteration 5"),
        "interrupted": ("interrupted", "interrupted at iteration 4 of 6 (SIGTERM)"),
        "killed": ("interrupted", "running, then stopped; starts again (no checkpoint)"),
        "running": ("running", f"running elsewhere (pid {os.getpid()} on {os.uname().nodename})"),
        "pending": ("pending", "pending"),
    }
    assert launcher.run_state(runs / "running").kind == "interrupted"  # the lock is free again


def test_a_run_that_another_process_trains_is_not_submitted_again(workspace, fig1_ids, capsys):
    """Two submissions overlapping: the run is left to the process that holds its lock."""
    base, flags = workspace
    holder = RunDir(base / "runs" / fig1_ids["plain20"])
    holder.lock()
    try:
        assert main(["run", "fig1", *flags, "--launcher", "local", "--only", "plain20"]) == 3  # not done by this one
    finally:
        holder.unlock()
    out = capsys.readouterr().out
    assert f"{holder.path}: running elsewhere (pid {os.getpid()} on {os.uname().nodename}); not submitted" in out
    assert "0 to train" in out and f"1 run(s) not done ({holder.name})" in out
    assert not (base / "runs" / ".submitit").exists()  # no job


def test_the_requeue_hook_requeues_an_unfinished_run_and_not_a_diverged_one(tmp_path, capsys):
    """What submitit calls on the warning signal (with no run process left to stop here)."""
    experiment = load_experiment("fig1")
    spec = plan_runs(experiment, experiment.profile("smoke"))[0].to_dict()
    for name, fields in {
        "interrupted": {"iterations": 4, "stopped_by": "SIGTERM"},
        "diverged": {"diverged_at": 5},
    }.items():
        RunDir(tmp_path / name).path.mkdir()
        RunDir(tmp_path / name).write_record({"run_id": name, "spec": spec, "status": name, "final": {}, **fields})
    jobs = {
        name: launcher.RunJob(run_id=name, run_dir=str(tmp_path / name), argv=("run", "fig1"), cwd=str(tmp_path))
        for name in ("interrupted", "diverged")
    }
    warning = launcher.preemption_signal()
    previous = signal.getsignal(warning)
    try:  # the hook ignores a second warning signal: this process gets its handler back after
        again = jobs["interrupted"].checkpoint()
        assert jobs["diverged"].checkpoint() is None  # submitit then ends the job, not requeued
    finally:
        signal.signal(warning, previous)
    assert again.function == launcher.RunJob(**{**vars(jobs["interrupted"]), "attempt": 2}) and again.args == ()
    out = capsys.readouterr().out
    assert "interrupted: interrupted at iteration 4 of 6 (SIGTERM); requeued, to continue from its checkpoint" in out
    assert "diverged: diverged at iteration 5; not requeued (a diverged run is not retried)" in out


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """srun and sbatch stand-ins on the PATH: sbatch refuses partition 'nope' as SLURM would, else answers with
    job ids 4242, 4243, ...; submitit leaves each script it wrote in its folder as <job id>_submission.sh."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\n"
        "if grep -q -- '--partition=nope' \"$1\"; then\n"
        "  echo 'sbatch: error: Batch job submission failed: Invalid partition name specified' >&2; exit 1\n"
        "fi\n"
        'n=$(cat "$0.count" 2>/dev/null || echo 0); echo $((n + 1)) > "$0.count"\n'
        'echo "Submitted batch job $((4242 + n))"\n'
    )
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def sbatch_lines(folder: Path, job_id: int) -> set[str]:
    return set((folder / f"{job_id}_submission.sh").read_text().splitlines())


def test_slurm_submits_an_array_of_runs_and_a_render_job_after_it(workspace, fig1_ids, fake_slurm, capsys):
    from submitit.core.utils import DelayedSubmission

    base, flags = workspace
    slurm = ["--launcher", "slurm", "--partition", "gpu", "--time", "4h", "--cpus-per-run", "8"]
    slurm += ["--mem-per-run", "32G", "--slurm-option", "account=proj"]
    assert main(["run", "fig1", *flags, *slurm]) == 0
    out = capsys.readouterr().out
    assert "submitted job array 4242 (tasks 0-1)" in out and "submitted job 4243: tests and renders fig1" in out
    folder = base / "runs" / ".submitit" / "fig1-smoke"
    runs = sbatch_lines(folder, 4242)
    for line in (
        "#SBATCH --array=0-1%2",  # one task per pending run, all at once
        "#SBATCH --partition=gpu",
        "#SBATCH --time=240",
        "#SBATCH --signal=USR2@120",  # the warning signal, --warn-before (2 min) ahead of --time
        "#SBATCH --gpus-per-node=1",  # the run's --devices 1
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --nodes=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH --account=proj",
        "#SBATCH --job-name=fig1-smoke",
    ):
        assert line in runs, line
    assert any(line.startswith("srun ") and "submitit.core._submit" in line for line in runs)
    render = sbatch_lines(folder, 4243)
    assert {"#SBATCH --dependency=afterany:4242", "#SBATCH --job-name=fig1-smoke-render"} <= render
    assert {"#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=1", "#SBATCH --time=240"} <= render
    assert not any(line.startswith("#SBATCH --array") for line in render)
    # Each array task runs `resnet-repro run fig1 --only RUN` with this command's flags; the render job, without.
    jobs = [DelayedSubmission.load(folder / f"4242_{task}_submitted.pkl").function for task in (0, 1)]
    assert [job.run_id for job in jobs] == [fig1_ids["plain20"], fig1_ids["plain56"]]
    for job in jobs:
        assert job.argv[:2] == ("run", "fig1") and job.argv[-2:] == ("--only", job.run_id)
        assert {"--data-root", "--threads", "--no-progress"} <= set(job.argv) and "--launcher" not in job.argv
        assert job.cwd == os.getcwd() and Path(job.run_dir) == (base / "runs" / job.run_id).resolve()
    renderer = DelayedSubmission.load(folder / "4243_submitted.pkl").function
    assert renderer.argv == jobs[0].argv[:-2] and len(renderer.run_dirs) == 2
    # DDP runs: one task per GPU, as Lightning's SLURM launch wants, and the cores shared among them.
    ddp = ["--devices", "4", "--strategy", "ddp", "--accelerator", "gpu", "--gpus-per-run", "4", "--max-parallel", "1"]
    other = ["--runs-dir", str(base / "ddp-runs")]
    assert main(["run", "fig1", *flags, *slurm, *ddp, *other, "--only", "plain20"]) == 0
    assert "render" not in capsys.readouterr().out  # --only trains, and does not render
    lines = sbatch_lines(base / "ddp-runs" / ".submitit" / "fig1-smoke", 4244)
    assert {"#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4", "#SBATCH --cpus-per-task=2"} <= lines
    assert not any(line.startswith("#SBATCH --array") for line in lines)  # a single job is no array


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--partition", "gpu"], "--partition is a cluster option: add --launcher slurm"),
        (["--launcher", "pbs"], "argument --launcher: invalid choice: 'pbs'"),
        (["--launcher", "slurm"], "--launcher slurm needs --time"),
        (["--launcher", "slurm", "--time", "90"], "expected a limit with its unit (4h, 90m, 5400s)"),
        (["--launcher", "local", "--time", "1m", "--warn-before", "2m"], "--warn-before (120s) must be shorter"),
        (["--launcher", "local", "--jobs", "2"], "--jobs trains several runs in one process"),
        (["--launcher", "local", "--stop-after", "9m"], "--stop-after is for jobs nobody warns"),
        (["--launcher", "local", "--force"], "--force with --launcher would restart a requeued run"),
        (["--launcher", "local", "--partition", "gpu"], "--partition is a SLURM option"),
        (["--launcher", "local", "--gpus-per-run", "2"], "--gpus-per-run 2, but each run trains on 1 device(s)"),
        (["--launcher", "local", "--accelerator", "cpu", "--gpus-per-run", "1"], "with --accelerator cpu"),
        (["--launcher", "local", "--devices", "auto"], "--devices auto counts the devices of whatever machine"),
        (["--launcher", "local", "--max-parallel", "0"], "--max-parallel must be at least 1"),
        (["--launcher", "local", "--slurm-option", "account"], "expected an sbatch option as KEY=VALUE"),
        (["--launcher", "local", "--mem-per-run", "lots"], "expected a memory size such as 64G"),
        (["--status", "--launcher", "local"], "--status only reads the runs directory; drop --launcher"),
        (["--launcher", "slurm", "--time", "4h", "--partition", "nope"], "sbatch refused the job: sbatch: error:"),
    ],
)
def test_bad_launcher_options_are_one_line_and_exit_2(workspace, fake_slurm, capsys, options, message):
    base, flags = workspace
    try:
        status = main(["run", "fig1", *flags, *options])
    except SystemExit as exc:  # argparse's own errors (a bad choice or value) exit from the parser
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not list((base / "runs").glob("*/run.json"))


def test_slurm_without_srun_is_a_one_line_error(workspace, monkeypatch, capsys):
    base, flags = workspace
    monkeypatch.setenv("PATH", str(base))  # no srun there
    assert main(["run", "fig1", *flags, "--launcher", "slurm", "--time", "4h"]) == 2
    assert capsys.readouterr().err.strip() == (
        "resnet-repro run: error: --launcher slurm: no srun on this machine; submit from a SLURM login node, "
        "or use --launcher local"
    )


def test_the_cli_starts_without_submitit():
    """submitit is imported when a job is submitted or runs, not by every `resnet-repro` command."""
    import subprocess

    code = "import sys, resnet_repro.cli as c; c.build_parser(); print('submitit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
