"""`run --jobs N` on several GPUs: one GPU per worker, no DDP inside a pool, and one renderer under DDP.

No CUDA is started: the GPU count is monkeypatched, so these run on a CPU-only machine.
"""

import multiprocessing
import signal
from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only

from resnet_repro import report, runner
from resnet_repro.cli import main
from resnet_repro.data.cifar10 import DataConfig
from resnet_repro.runner import PendingRun, worker_hardware
from resnet_repro.spec import TrainSpec
from resnet_repro.training import Hardware


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


def test_worker_hardware_gives_worker_k_gpu_k_mod_count(four_gpus):
    devices = [worker_hardware(Hardware(), k).devices for k in range(6)]
    assert devices == ["0,", "1,", "2,", "3,", "0,", "1,"]
    assert worker_hardware(Hardware(accelerator="gpu"), 2).devices == "2,"


@pytest.mark.parametrize(
    "hardware",
    [Hardware(accelerator="cpu"), Hardware(devices="3,")],  # the CPU, or a GPU the user chose: kept
)
def test_worker_hardware_keeps_what_the_user_chose(four_gpus, hardware):
    assert worker_hardware(hardware, 1) == hardware


def test_worker_hardware_leaves_a_one_gpu_machine_alone(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert worker_hardware(Hardware(), 3) == Hardware()


def test_pool_workers_take_successive_slots(monkeypatch):
    monkeypatch.setattr(runner, "_WORKER_SLOT", 0)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    counter = multiprocessing.get_context("spawn").Value("i", 0)
    slots = []
    try:
        for _ in range(3):
            runner._worker_init(counter)  # what each spawned worker runs as it starts
            slots.append(runner._WORKER_SLOT)
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert slots == [0, 1, 2]


def test_a_worker_trains_its_run_on_its_own_gpu(four_gpus, monkeypatch, tmp_path):
    trained = []
    monkeypatch.setattr(runner, "_train_one", lambda run, options: trained.append(run) or {"status": "finished"})
    monkeypatch.setattr(runner, "_STOPPED_BY", None)
    monkeypatch.setattr(runner, "_WORKER_SLOT", 2)
    spec = TrainSpec(model="resnet8", data=DataConfig(data="unused"))
    runner._train_in_worker(PendingRun(spec, tmp_path / "run", False, Hardware(threads=4)), {})
    assert trained[0].hardware == Hardware(devices="2,", threads=4)


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--strategy", "ddp"], "--strategy ddp"),
        (["--devices", "2"], "--devices 2"),
        (["--devices", "0,1"], "--devices 0,1"),
        (["--num-nodes", "2"], "--num-nodes 2"),
    ],
)
def test_jobs_with_ddp_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys, flags, named):
    runs, results = tmp_path / "runs", tmp_path / "results"
    argv = ["run", "fig1", "--profile", "smoke", "--jobs", "2", *flags]
    argv += ["--runs-dir", str(runs), "--results-dir", str(results), "--wandb", "off", "--no-progress"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "--jobs 2" in err and named in err
    assert not runs.exists() and not results.exists()


@pytest.mark.parametrize("rank, renders", [(0, True), (1, False)])
def test_run_renders_on_global_rank_zero_only(monkeypatch, tmp_path, rank, renders):
    """Under DDP every rank runs the command; only rank 0 writes the artifact and the results index."""
    rendered = []
    monkeypatch.setattr(rank_zero_only, "rank", rank)
    monkeypatch.setattr(
        runner, "run_experiment", lambda *args, **kwargs: [{"run_id": "r", "status": "finished", "final": {}}]
    )
    monkeypatch.setattr(report, "render_experiment", lambda *args, **kwargs: rendered.append("artifact") or [])
    monkeypatch.setattr(report, "write_results_index", lambda results_dir: rendered.append("index"))
    argv = ["run", "fig1", "--profile", "smoke", "--runs-dir", str(tmp_path / "runs")]
    assert main([*argv, "--results-dir", str(tmp_path / "results"), "--wandb", "off"]) == 0
    assert rendered == (["artifact", "index"] if renders else [])
    assert not Path(tmp_path / "results").exists()
