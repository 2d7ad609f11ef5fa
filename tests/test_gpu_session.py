"""benchmarks/gpu_session.py in its CPU smoke mode: the same steps and the same packing as on a lent GPU, so
the first window cannot be wasted on a script that rotted between loans."""

import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_session.py"


@pytest.fixture(scope="module")
def gpu_session():
    """The session script, imported as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gpu_session", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tiny_cifar_archive, tmp_path_factory):
    """One CPU smoke session of every first-window step, in a subprocess that cannot import wandb (the lent
    machine has none): its returned folder, work folder and exit status."""
    base = tmp_path_factory.mktemp("gpu-session")
    blocker = base / "no-wandb" / "wandb"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('wandb imported although logging is off')\n")
    command = [sys.executable, str(SCRIPT), "--cpu-smoke", "--data", str(tiny_cifar_archive), "--allow-partial"]
    command += ["--out", str(base / "out"), "--work", str(base / "work")]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env={**_env(), "PYTHONPATH": str(base / "no-wandb")}
    )
    return base / "out", base / "work", done


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.slow
def test_cpu_smoke_runs_every_step_of_the_first_window(gpu_session, smoke):
    out, _, done = smoke
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((out / "session.json").read_text())
    assert [s["step"] for s in record["steps"]] == list(gpu_session.FIRST_WINDOW)
    assert [s["status"] for s in record["steps"]] == ["done"] * len(gpu_session.FIRST_WINDOW), record["steps"]
    steps = {s["step"]: s for s in record["steps"]}
    assert steps["paper"]["iterations"] > 0 and steps["paper"]["paper_min"] > 0
    assert steps["checks"]["tf32"] is False  # fp32 runs turn TF32 off and say so
    assert [r["n"] for r in steps["jobs"]["rows"]] == list(gpu_session.SMOKE.jobs)
    assert all(r["images_per_s"] > 0 and r["window_s"] > 0 for r in steps["jobs"]["rows"])
    assert steps["profile"]["wall_ms"] > 0 and steps["profile"]["host_ms"] > 0
    page = (out / "session.md").read_text()
    assert all(f"| {name} | done |" in page for name in gpu_session.FIRST_WINDOW)


@pytest.mark.slow
def test_what_comes_back_fits_the_lent_machines_limits(smoke):
    out, _, _ = smoke
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and "session.md" in {p.name for p in files}
    assert all(p.stat().st_size <= 16 * 2**20 for p in files)
    assert sum(p.stat().st_size for p in files) <= 64 * 2**20
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)  # $OUT/a/b/file at most
    pieces = sorted(out.glob("session.tar.gz.*"))
    joined = out.parent / "joined.tar.gz"
    joined.write_bytes(b"".join(p.read_bytes() for p in pieces))
    with tarfile.open(joined) as tar:
        names = tar.getnames()
    assert "cache" not in {n.split("/")[0] for n in names}  # decoded pixels never travel
    assert not [n for n in names if "checkpoints" in n]  # nor the timed runs' checkpoints: only runs/ keeps them
    assert any(n.endswith("metrics.csv") for n in names) and any(n.startswith("logs/") for n in names)


def test_packing_refuses_what_would_not_come_back(gpu_session, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "big.bin").write_bytes(__import__("os").urandom(3 * 2**20))  # incompressible
    monkeypatch.setattr(gpu_session, "RETURN_FILE_BYTES", 2**20)
    session = gpu_session.Session(
        args=type("A", (), {"budget": 10})(), mode=gpu_session.SMOKE, work=work, started=0.0, command="x"
    )
    pieces = gpu_session.pack(session, tmp_path / "out")
    assert sorted(p.name for p in pieces) == ["session.json", "session.md", *(f"session.tar.gz.0{i}" for i in range(4))]
    monkeypatch.setattr(gpu_session, "RETURN_FILE_BYTES", 2**19)  # 7 pieces: more than 8 files in all
    with pytest.raises(gpu_session.StepError, match="more than comes back"):
        gpu_session.pack(session, tmp_path / "out2")


def test_aggregate_counts_only_the_window_in_which_every_run_trains(gpu_session):
    # Run 0 starts at once; run 1 logs its first step at t=2; run 0 ends at t=6 (its step stops moving).
    samples = [
        (0.0, [20, None]),
        (2.0, [60, 20]),
        (4.0, [100, 60]),
        (6.0, [140, 100]),
        (8.0, [140, 140]),
        (10.0, [140, 180]),
    ]
    got = gpu_session.aggregate(samples, n=2, batch=1)
    assert got["window_s"] == 4.0  # from t=2 (both logging) to t=6 (run 0 stopped)
    assert got["images_per_s"] == ((140 - 60) + (100 - 20)) / 4.0


def test_mistakes_are_one_line_and_exit_2(gpu_session, tmp_path, capsys):
    assert gpu_session.main(["--cpu-smoke", "--data", str(tmp_path / "missing.tar.gz"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "carry the copy inside the checkout" in err[0]
    assert gpu_session.main(["--cpu-smoke", "--data", str(SCRIPT), "--out", str(tmp_path), "--steps", "bogus"]) == 2
    assert "--steps: unknown bogus" in capsys.readouterr().err


@pytest.mark.slow
def test_a_later_window_trains_an_artifact_and_carries_its_runs_back(tiny_cifar_archive, tmp_path):
    command = [sys.executable, str(SCRIPT), "--cpu-smoke", "--data", str(tiny_cifar_archive), "--allow-partial"]
    command += ["--steps", "decode,artifact", "--artifact", "fig1", "--profile", "smoke", "--jobs", "2"]
    command += [
        "--out",
        str(tmp_path / "out"),
        "--work",
        str(tmp_path / "work"),
        "--resume-from",
        str(tmp_path / "none"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "session.json").read_text())
    assert [(s["step"], s["status"]) for s in record["steps"]] == [
        ("env", "done"),
        ("decode", "done"),
        ("artifact", "done"),
    ]
    assert len(record["steps"][-1]["runs"]) == 2 and all(
        "finished at iteration 6" in r for r in record["steps"][-1]["runs"]
    )
    joined = b"".join(p.read_bytes() for p in sorted((tmp_path / "out").glob("session.tar.gz.*")))
    (tmp_path / "joined.tar.gz").write_bytes(joined)
    with tarfile.open(tmp_path / "joined.tar.gz") as tar:
        runs = {n.split("/")[1] for n in tar.getnames() if n.startswith("runs/") and n.endswith("run.json")}
    assert len(runs) == 2  # what `report --runs-dir <unpacked>/runs` renders from
