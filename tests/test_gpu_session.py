"""benchmarks/gpu_session.py end to end in its CPU smoke mode, so the GPU session cannot rot between GPU loans."""

import importlib.util
import json
import signal
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_session.py"


@pytest.fixture(scope="module")
def gpu_session():
    """The session script, imported as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_session", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def smoke_args(tiny_cifar_archive, cifar_cache_root, tmp_path):
    """A CPU smoke session on the tiny generated archive, into tmp_path."""
    return [
        "--cpu-smoke",
        "--data",
        str(tiny_cifar_archive),
        "--data-root",
        str(cifar_cache_root),
        "--allow-partial",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "session"),
        "--jobs",
        "1",
    ]


def test_gpu_session_cpu_smoke_runs_every_step_and_records_it(gpu_session, smoke_args, tmp_path, capsys):
    assert gpu_session.main(smoke_args) == 0
    out = tmp_path / "session"
    record = json.loads((out / "session.json").read_text())
    assert [r["step"] for r in record["steps"]] == list(gpu_session.STEPS)
    assert [r["status"] for r in record["steps"]] == ["ok"] * len(gpu_session.STEPS), record["steps"]
    for r in record["steps"]:
        assert r["files"] and all((out / f).exists() for f in r["files"]), r
    for name in (
        "environment.json",
        "throughput.md",
        "throughput.csv",
        "throughput-bf16-mixed.md",
        "throughput-bf16-mixed.csv",
        "jobs.md",
        "jobs.csv",
        "fig6.log",
        "fig6/fig6-smoke.png",
        "table6.log",
        "table6/table6-smoke.md",
    ):
        assert (out / name).stat().st_size > 0, name
    env = json.loads((out / "environment.json").read_text())
    assert env["device"].startswith("CPU ") and env["cpu_count"] >= 1 and env["torch"] and env["lightning"]
    md = (out / "session.md").read_text()
    assert md.startswith(f"# CPU smoke session on {env['device']}\n")
    for step in gpu_session.STEPS:
        assert f"| {step} | ok | " in md
    assert "python benchmarks/gpu_session.py --cpu-smoke" in md  # the exact command

    assert pd.read_csv(out / "throughput-bf16-mixed.csv")["precision"].eq("bf16-mixed").all()
    jobs = pd.read_csv(out / "jobs.csv")
    assert jobs["jobs"].tolist() == [1, 2] and jobs["runs_with_rate"].tolist() == [1, 2]
    assert (jobs["images_per_s"] > 0).all() and jobs["complete"].all()
    assert jobs["vs_one_job"].iloc[0] == pytest.approx(1.0)
    assert record["best_jobs"] in (1, 2)

    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/run.json")]
    assert sorted(r["spec"]["model"] for r in runs) == ["plain20", "plain56", "resnet20", "resnet56"]
    assert all(r["status"] == "finished" and r["profile"] == "smoke" for r in runs)
    assert "all 4 runs finished; rendered fig6/" in md and md.count("| finished | 6 / 6 |") == 4 + 2
    assert "all 2 runs finished; rendered table6/" in md and "fig6 (smoke)" in (out / "fig6.log").read_text()
    assert "0 to train" in (out / "table6.log").read_text()  # table6 reuses fig6's runs
    assert "gpu_session: done in" in capsys.readouterr().out


def test_gpu_session_records_a_failed_step_and_goes_on(gpu_session, smoke_args, tmp_path, monkeypatch):
    def broken(session):
        raise RuntimeError("throughput went wrong\nsecond line")

    monkeypatch.setitem(gpu_session.STEPS, "throughput", broken)
    steps = ["--steps", "environment,throughput,fig6", "--stop-after", "0"]  # fig6 trains nothing: exit status 3
    assert gpu_session.main([*smoke_args, *steps]) == 1
    out = tmp_path / "session"
    record = {r["step"]: r for r in json.loads((out / "session.json").read_text())["steps"]}
    assert list(record) == ["environment", "throughput", "fig6"]
    assert record["throughput"]["status"] == "failed"
    assert record["throughput"]["error"] == "RuntimeError: throughput went wrong"
    assert record["environment"]["status"] == "ok" and record["fig6"]["status"] == "ok"
    assert "time limit reached" in record["fig6"]["summary"] and "0/4 runs finished" in record["fig6"]["summary"]
    md = (out / "session.md").read_text()
    assert "| throughput | failed | " in md and "RuntimeError: throughput went wrong |" in md
    assert "second line" not in md and "| fig6 | ok | " in md
    assert not (out / "throughput.md").exists() and not (out / "fig6").exists()


def test_gpu_session_mistakes_in_the_command_are_one_line_errors(gpu_session, tmp_path, monkeypatch, capsys):
    assert gpu_session.main(["--cpu-smoke", "--steps", "environment,warmup", "--out", str(tmp_path / "s")]) == 2
    assert "unknown step(s) warmup" in capsys.readouterr().err
    assert (
        gpu_session.main(["--cpu-smoke", "--data", str(tmp_path / "nowhere.tar.gz"), "--out", str(tmp_path / "s")]) == 2
    )
    assert "nowhere.tar.gz does not exist" in capsys.readouterr().err
    monkeypatch.delenv("RESNET_REPRO_DATA", raising=False)  # no source named, and nothing downloaded: stop at once
    assert gpu_session.main(["--cpu-smoke", "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "no CIFAR-10 source: pass --data PATH" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(gpu_session.torch.cuda, "is_available", lambda: False)
    assert gpu_session.main(["--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--cpu-smoke" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()  # nothing is written before the flags are checked


def test_gpu_session_gpu_sizes_are_flags_throughput_accepts(gpu_session):
    """A typo in the GPU mode's sizes would otherwise first show on a lent GPU."""
    bench = gpu_session._load_benchmark("throughput")
    for mode in (gpu_session.GPU, gpu_session.SMOKE):
        args = bench.build_parser().parse_args([*mode.throughput_flags, "--precision", "bf16-mixed"])
        assert args.models and args.warmup is not None
        assert set(mode.needs) <= set(gpu_session.STEPS)
    assert gpu_session.GPU.budget == 540 and gpu_session.GPU.profile == "paper"
    assert gpu_session.GPU.jobs_sweep == "1,2,4,8" and gpu_session.SMOKE.jobs_sweep == "1,2"


def test_gpu_session_continues_a_kept_run_and_hands_it_back(gpu_session, smoke_args, tmp_path, send_signal):
    # A machine that keeps nothing between loans: a run begun elsewhere comes in from the checkout's
    # results/runs/ (--resume-from), and goes back out in the session folder with its checkpoint.
    from resnet_repro.cli import main

    elsewhere = tmp_path / "elsewhere"
    data = {flag: smoke_args[smoke_args.index(flag) + 1] for flag in ("--data", "--data-root")}
    begun = ["run", "fig6", "--profile", "smoke", "--only", "resnet20", "--runs-dir", str(elsewhere), "--wandb", "off"]
    begun += ["--data", data["--data"], "--data-root", data["--data-root"], "--no-progress"]
    begun += ["--results-dir", str(tmp_path / "elsewhere-results"), "--threads", "1"]
    with send_signal(signal.SIGINT, after=3):
        assert main(begun) == 130
    [rid] = [p.name for p in elsewhere.iterdir()]
    checkpoint = (elsewhere / rid / "checkpoints" / "last.ckpt").read_bytes()

    # Loan 1 trains nothing (--stop-after 0) and still hands the run back, checkpoint and all.
    first = [*smoke_args, "--steps", "fig6", "--stop-after", "0", "--resume-from", str(elsewhere)]
    assert gpu_session.main(first) == 0
    handed = tmp_path / "session" / "runs" / rid
    assert (handed / "checkpoints" / "last.ckpt").read_bytes() == checkpoint
    assert f"Continued {rid} from {elsewhere} at iteration 3." in (tmp_path / "session" / "session.md").read_text()

    # Loan 2, a fresh machine: continues it from what loan 1 handed back and finishes it.
    second = [a if a != str(tmp_path / "runs") else str(tmp_path / "runs-2") for a in smoke_args]
    second = [a if a != str(tmp_path / "session") else str(tmp_path / "session-2") for a in second]
    assert gpu_session.main([*second, "--steps", "fig6", "--resume-from", str(tmp_path / "session" / "runs")]) == 0
    resumed = tmp_path / "runs-2" / rid
    assert json.loads((resumed / "run.json").read_text())["status"] == "finished"
    assert (resumed / "metrics-0.csv").exists(), "it was trained again from the start, not resumed"
    back = tmp_path / "session-2" / "runs" / rid
    assert (back / "run.json").exists() and not (back / "checkpoints").exists()  # finished: logs only


def test_gpu_session_a_short_stop_after_leaves_the_run_the_rest_of_the_budget(gpu_session, smoke_args, monkeypatch):
    # --stop-after limits training only: starting up, checkpointing and rendering may take the rest of the
    # budget (a busy machine needs more than the grace), and only a run still going then is stopped by force.
    given = {}

    def run_logged(command, log, timeout, grace):
        given.update(stop_after=command[command.index("--stop-after") + 1], timeout=timeout, grace=grace)
        return gpu_session.EXIT_TIME_LIMIT

    monkeypatch.setattr(gpu_session, "run_logged", run_logged)
    assert gpu_session.main([*smoke_args, "--steps", "fig6", "--stop-after", "0"]) == 0
    assert given["stop_after"] == "0" and given["grace"] == gpu_session.SMOKE.grace
    assert gpu_session.SMOKE.budget - 30 < given["timeout"] <= gpu_session.SMOKE.budget
