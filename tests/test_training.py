"""Tests for resnet_repro.training, module and the `train` command: logs, warm-up, exact resume, NaN, bad input.

Runs are real Lightning runs of `resnet8` (6n+2 with n=1) for a few dozen iterations on tiny generated
CIFAR-10 look-alikes, one torch thread each, so that resumed and uninterrupted runs can match exactly.
"""

import builtins
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from resnet_repro.cli import main
from resnet_repro.data.cifar10 import CIFAR10DataModule, DataConfig
from resnet_repro.data.sources import CIFAR10_CLASSES
from resnet_repro.errors import UserError
from resnet_repro.models import layer_response_bns
from resnet_repro.module import ClassifierModule, NonFiniteLossError
from resnet_repro.records import read_run
from resnet_repro.rundir import RunDir
from resnet_repro.schedules import step_lr
from resnet_repro.spec import Schedule, TrainSpec
from resnet_repro.training import Hardware, RunOptions, train

SHARED_SHA256 = "fdf0b4f6a0ce0e8a5d81bb436b49a9fb87e6911e1442da8db80f1a61ec5517e3"
CURVE_COLUMNS = ["lr", "train/loss", "train/error", "test/error", "test/loss"]
CPU1 = Hardware(accelerator="cpu", threads=1)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """`--threads 1` in the CLI tests sets one torch thread; give the rest of the session its threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def learnable_cifar(tmp_path_factory) -> Path:
    """An ImageFolder of 16 train + 4 test noisy images per class, each class a close shade of grey.

    Learnable, but slowly enough at lr 0.01 that the paper's warm-up ends after a few logged intervals.
    """
    root = tmp_path_factory.mktemp("learnable-cifar")
    rng = np.random.default_rng(0)
    palette = 128 + rng.integers(-20, 21, size=(10, 3))
    for split, count in (("train", 16), ("test", 4)):
        for label, cls in enumerate(CIFAR10_CLASSES):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(palette[label] + rng.normal(0, 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i:04d}.png")
    return root


def tiny_spec(
    data: Path,
    cache_root: Path,
    *,
    iters: int = 20,
    milestones=(10, 15),
    lr: float = 0.1,
    warmup: str = "auto",
    val_split: int = 0,
    **kwargs,
) -> TrainSpec:
    """resnet8, batch 16, logging every 2 iterations, evaluating every 6 (not a divisor of 20)."""
    settings = dict(log_every=2, eval_every=6, checkpoint_every=4) | kwargs
    return TrainSpec(
        model="resnet8",
        schedule=Schedule(max_iters=iters, milestones=milestones, lr=lr, warmup=warmup),
        batch_size=16,
        data=DataConfig(data=str(data), root=str(cache_root), val_split=val_split, full=False),
        **settings,
    )


def warmup_spec(data: Path, cache_root: Path) -> TrainSpec:
    return tiny_spec(data, cache_root, iters=60, milestones=(45, 55), warmup="on", log_every=4, eval_every=10)


def run(spec: TrainSpec, run_dir: Path, *, resume: bool = False) -> dict:
    """train() on one CPU thread, giving the process its threads back afterwards."""
    threads = torch.get_num_threads()
    try:
        return train(spec, RunOptions(run_dir=run_dir, resume=resume, wandb="off", progress=False), CPU1)
    finally:
        torch.set_num_threads(threads)


def interrupted_run(spec: TrainSpec, run_dir: Path, after: int, send_signal, signum=signal.SIGINT) -> dict:
    """Train `spec` and press Ctrl-C (or send `signum`, a real signal) during iteration `after`, so `after`
    iterations finish."""
    before = signal.getsignal(signum)
    with send_signal(signum, after):
        record = run(spec, run_dir)
    assert signal.getsignal(signum) is before, "the run's signal handler outlived it"
    return record


def curves(run_dir: Path) -> pd.DataFrame:
    return read_run(run_dir)[1].set_index("step")[CURVE_COLUMNS]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- a 20-iteration run: every column, the record, the last iterate -------------------------------


@pytest.fixture(scope="module")
def finished_run(tiny_cifar_archive, cifar_cache_root, tmp_path_factory):
    """A 20-iteration run with a 16-image validation split: (spec, record, run_dir)."""
    spec = tiny_spec(tiny_cifar_archive, cifar_cache_root, val_split=16)
    run_dir = tmp_path_factory.mktemp("runs") / "resnet8-s0"
    return spec, run(spec, run_dir), run_dir


def test_train_writes_every_metric_column(finished_run):
    _, _, run_dir = finished_run
    raw = pd.read_csv(run_dir / "metrics.csv")
    for column in (
        "step",
        "train/loss",
        "train/error",
        "lr",
        "throughput",
        "test/error",
        "test/loss",
        "val/error",
        "val/loss",
        "test/top5_error",
        "val/top5_error",
    ):
        assert column in raw.columns and raw[column].notna().any(), column
    assert (raw["throughput"].dropna() > 0).all()
    assert raw["train/error"].dropna().between(0, 100).all()


def test_train_record_holds_config_provenance_and_status(finished_run, tiny_cifar_archive):
    spec, record, run_dir = finished_run
    saved = json.loads((run_dir / "run.json").read_text())
    assert saved == json.loads(json.dumps(record, default=str))
    assert saved["status"] == "finished" and saved["iterations"] == 20
    assert TrainSpec.from_dict(saved["spec"]) == spec
    assert saved["spec"]["seed"] == 0 and saved["spec"]["schedule"]["milestones"] == [10, 15]
    for key in ("commit", "torch", "torchvision", "lightning", "python", "hardware"):
        assert saved[key], key
    assert saved["torch"] == torch.__version__
    source = saved["data_source"]
    assert source["sha256"] == sha256(tiny_cifar_archive) and source["jpeg_copy"] is False
    assert (source["kind"], source["train"], source["test"]) == ("archive", 80, 40)
    assert saved["wall_time_s"] > 0 and saved["started"] and saved["finished"]
    assert saved["params"] == sum(p.numel() for p in ClassifierModule(spec).model.parameters())
    assert saved["warmup"] is False and saved["warmup_end_iter"] is None


def test_train_top5_error_is_at_most_top1_error(finished_run):
    _, record, _ = finished_run
    for split in ("test", "val"):
        assert 0 <= record["final"][f"{split}/top5_error"] <= record["final"][f"{split}/error"]


def test_train_records_fig7_layer_responses_of_the_last_iterate_on_the_test_set(finished_run):
    spec, record, run_dir = finished_run
    responses = record["layer_responses"]
    module = ClassifierModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    layers = layer_response_bns(module.model)
    assert [r["layer"] for r in responses] == [name for name, _ in layers]  # resnet8: 7 layers
    # The same statistic computed directly: the std of each BN's output over the whole test set.
    dm = CIFAR10DataModule(spec.data, batch_size=16, max_iters=20, seed=spec.seed)
    dm.setup("fit")
    outputs = {name: [] for name, _ in layers}
    handles = [bn.register_forward_hook(lambda m, i, o, n=name: outputs[n].append(o)) for name, bn in layers]
    module.eval()
    with torch.no_grad():
        for batch in dm.val_dataloader()[0]:
            module(dm.on_after_batch_transfer(batch, 0)[0])
    for handle in handles:
        handle.remove()
    expected = [torch.cat(outputs[name]).double().std(unbiased=False).item() for name, _ in layers]
    assert [r["std"] for r in responses] == pytest.approx(expected, rel=1e-5)


def test_train_record_saves_the_val_split_it_held_out(finished_run, tiny_cifar):
    spec, record, _ = finished_run
    dm = CIFAR10DataModule(spec.data, batch_size=16, max_iters=20, seed=spec.seed, arrays=tiny_cifar)
    dm.setup("fit")
    assert record["val_indices"] == dm.val_indices.tolist()
    assert len(set(record["val_indices"])) == 16 and all(0 <= i < 80 for i in record["val_indices"])


def test_train_logs_against_the_iteration_count(finished_run):
    _, _, run_dir = finished_run
    c = curves(run_dir)
    assert c["train/loss"].dropna().index.tolist() == list(range(2, 21, 2))
    # Every 6 iterations, and the last iterate although 20 is not a multiple of 6.
    assert c["test/error"].dropna().index.tolist() == [6, 12, 18, 20]
    # The lr of iteration i (1-based) is the schedule's at i - 1 completed steps: /10 after 10 and 15.
    for step, lr in c["lr"].dropna().items():
        assert lr == pytest.approx(step_lr(step - 1, 0.1, (10, 15)), rel=1e-6), step
    assert c.loc[10, "lr"] == pytest.approx(0.1) and c.loc[12, "lr"] == pytest.approx(0.01)
    assert c.loc[16, "lr"] == pytest.approx(0.001)


def test_train_final_metrics_are_the_last_logged(finished_run):
    _, record, run_dir = finished_run
    c = read_run(run_dir)[1]
    last_test = c.dropna(subset=["test/error"]).iloc[-1]
    assert last_test["step"] == record["iterations"] == 20
    for key in ("test/error", "test/loss", "val/error"):
        assert record["final"][key] == pytest.approx(last_test[key], rel=1e-6), key
    last_train = c.dropna(subset=["train/error"]).iloc[-1]
    assert record["final"]["train/error"] == pytest.approx(last_train["train/error"])


def test_train_logs_the_last_partial_interval(tiny_cifar_archive, cifar_cache_root, tmp_path):
    """9 iterations logged every 4: rows at 4, 8 and 9, so the final training error covers the last iterate."""
    spec = tiny_spec(tiny_cifar_archive, cifar_cache_root, iters=9, milestones=(4, 6), log_every=4, eval_every=9)
    record = run(spec, tmp_path / "run")
    train_rows = read_run(tmp_path / "run")[1].dropna(subset=["train/error"])
    assert train_rows["step"].tolist() == [4, 8, 9]
    assert record["final"]["train/error"] == pytest.approx(train_rows["train/error"].iloc[-1])


def test_train_writes_last_checkpoint(finished_run):
    _, _, run_dir = finished_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 20
    assert "warmup_ended_at" in checkpoint


def test_train_checkpoints_the_last_iterate_off_the_checkpoint_grid(tiny_cifar_archive, cifar_cache_root, tmp_path):
    spec = tiny_spec(tiny_cifar_archive, cifar_cache_root, iters=10, milestones=(5, 8), checkpoint_every=4)
    record = run(spec, tmp_path / "run")
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert record["iterations"] == checkpoint["global_step"] == 10


def test_train_compile_compiles_the_network_once_and_keeps_eager_checkpoints(
    tiny_cifar_archive, cifar_cache_root, tmp_path
):
    """--compile: a graph for training and one for evaluation, not a re-trace every iteration (compiling the
    whole LightningModule did that: its Python counters change each step), and eager state_dict keys."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    spec = tiny_spec(tiny_cifar_archive, cifar_cache_root, iters=12, milestones=(6, 9), eval_every=12)
    threads = torch.get_num_threads()
    try:
        record = train(
            spec,
            RunOptions(run_dir=tmp_path / "run", wandb="off", progress=False),
            dataclasses.replace(CPU1, compile=True),
        )
    finally:
        torch.set_num_threads(threads)
        torch._dynamo.reset()
    assert record["status"] == "finished" and record["hardware_flags"]["compile"] is True
    assert 1 <= counters["stats"]["unique_graphs"] <= 4, dict(counters["stats"])
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert set(checkpoint["state_dict"]) == set(ClassifierModule(spec).state_dict())


def _set_tf32(cudnn: bool, matmul: bool) -> None:
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul


@pytest.mark.parametrize("precision, tf32", [("32-true", False), ("bf16-mixed", True)])
def test_train_at_32_true_turns_tf32_off_and_records_it(
    tiny_cifar_archive, cifar_cache_root, tmp_path, request, precision, tf32
):
    """fp32 means fp32: TF32 (on by default for cuDNN convolutions on Ampere+) is turned off for 32-true; the
    mixed precisions keep torch's setting. The flags exist on a CPU build, and monkeypatch restores them."""
    # Set and restored by hand: pytest's monkeypatch undoes an attribute it did not find in the instance's
    # __dict__ by deleting it, which torch's cuBLAS flag module refuses.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    request.addfinalizer(lambda: _set_tf32(*saved))
    spec = tiny_spec(tiny_cifar_archive, cifar_cache_root, iters=4, milestones=(2, 3), eval_every=4)
    threads = torch.get_num_threads()
    try:
        record = train(
            spec,
            RunOptions(run_dir=tmp_path / "run", wandb="off", progress=False),
            dataclasses.replace(CPU1, precision=precision),
        )
    finally:
        torch.set_num_threads(threads)
    assert torch.backends.cudnn.allow_tf32 is tf32 and torch.backends.cuda.matmul.allow_tf32 is tf32
    assert record["tf32"] is tf32 and RunDir(tmp_path / "run").read_record()["tf32"] is tf32


def test_cli_train_rejects_a_non_positive_thread_count(tiny_cifar_archive, cifar_cache_root, tmp_path, capsys):
    assert main(cli_args(tiny_cifar_archive, cifar_cache_root, tmp_path / "runs", "--threads", "-1")) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_train_throughput_times_training_only(tiny_cifar_archive, cifar_cache_root, tmp_path, monkeypatch):
    # A slow start (decoding a real copy takes seconds) must not show up as a slow first interval. The start-up
    # is a jump of the module's clock, not a sleep, so the check holds however busy the machine is.
    original, real_clock, jump = CIFAR10DataModule.prepare_data, time.perf_counter, [0.0]

    def slow_prepare(self):
        jump[0] += 10_000.0
        original(self)

    monkeypatch.setattr(CIFAR10DataModule, "prepare_data", slow_prepare)
    clock = types.SimpleNamespace(perf_counter=lambda: real_clock() + jump[0])
    monkeypatch.setattr("resnet_repro.module.time", clock)  # the module's clock alone, not Lightning's
    run(tiny_spec(tiny_cifar_archive, cifar_cache_root, iters=8, milestones=(4, 6)), tmp_path / "r")
    assert jump[0] > 0, "prepare_data was not called: the check would prove nothing"
    throughput = read_run(tmp_path / "r")[1]["throughput"].dropna()
    assert len(throughput) >= 2 and (throughput > 0).all()
    assert throughput.iloc[0] > 32 / 10_000, "the first interval (32 images) was timed from before the start-up"


def test_train_refuses_to_overwrite_a_run(finished_run):
    spec, _, run_dir = finished_run
    with pytest.raises(UserError, match="--resume"):
        run(spec, run_dir)


def test_train_resume_with_other_settings_names_them(finished_run):
    spec, _, run_dir = finished_run
    other = dataclasses.replace(spec, schedule=dataclasses.replace(spec.schedule, lr=0.05))
    stamp = (run_dir / "run.json").stat().st_mtime_ns
    with pytest.raises(UserError, match=r"schedule.lr 0.1 -> 0.05"):
        run(other, run_dir, resume=True)
    assert (run_dir / "run.json").stat().st_mtime_ns == stamp


def test_train_resume_with_other_numerics_names_them(finished_run):
    spec, _, run_dir = finished_run
    bf16 = dataclasses.replace(CPU1, precision="bf16-mixed")
    with pytest.raises(UserError, match=r"precision 32-true -> bf16-mixed"):
        train(spec, RunOptions(run_dir=run_dir, resume=True, wandb="off", progress=False), bf16)


def test_train_resume_without_checkpoint_says_so(tiny_cifar_archive, cifar_cache_root, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        run(tiny_spec(tiny_cifar_archive, cifar_cache_root), tmp_path / "never-ran", resume=True)
    assert not (tmp_path / "never-ran").exists()


@pytest.mark.slow
def test_train_on_the_real_copy_records_the_jpeg_source(real_cifar, real_cifar_path, cifar_cache_root, tmp_path):
    spec = TrainSpec(
        model="resnet8",
        schedule=Schedule(max_iters=6, milestones=(3, 5)),
        batch_size=32,
        data=DataConfig(data=str(real_cifar_path), root=str(cifar_cache_root)),
        log_every=3,
        eval_every=100,
        checkpoint_every=3,
    )
    record = run(spec, tmp_path / "real")
    source = record["data_source"]
    assert (source["sha256"], source["jpeg_copy"]) == (SHARED_SHA256, True)
    assert source["known"].startswith("cifar10-jpg q75") and (source["train"], source["test"]) == (50_000, 10_000)
    assert record["status"] == "finished" and 0 <= record["final"]["test/error"] <= 100


# --- warm-up (Sec. 4.2): lr 0.01 until the training error is below 80%, then back to 0.1 ------------


@pytest.mark.parametrize(
    "model, warmup, expected",
    [
        ("resnet20", "auto", False),
        ("resnet110", "auto", True),
        ("resnet20", "on", True),
        ("resnet110", "off", False),
    ],
)
def test_module_warmup_flag(model, warmup, expected):
    spec = TrainSpec(model=model, schedule=Schedule(warmup=warmup))
    assert ClassifierModule(spec).warmup is expected


@pytest.fixture(scope="module")
def warmup_run(learnable_cifar, cifar_cache_root, tmp_path_factory):
    """An uninterrupted 60-iteration run with warm-up on: (spec, record, run_dir)."""
    spec = warmup_spec(learnable_cifar, cifar_cache_root)
    run_dir = tmp_path_factory.mktemp("runs") / "warmup"
    return spec, run(spec, run_dir), run_dir


def test_train_warmup_returns_to_base_lr_when_train_error_falls_below_80(warmup_run):
    _, record, run_dir = warmup_run
    switch = record["warmup_end_iter"]
    assert record["warmup"] is True and switch is not None
    c = curves(run_dir).dropna(subset=["lr"])
    assert 4 < switch < 45, "the data should let warm-up end after a few intervals, before the first milestone"
    before, after = c[c.index <= switch], c[(c.index > switch) & (c.index <= 45)]
    assert len(before) >= 2 and len(after) >= 2
    assert np.allclose(before["lr"], 0.01) and np.allclose(after["lr"], 0.1)
    # The condition itself: the switch is the first logged interval with training error below 80%.
    assert (before["train/error"].iloc[:-1] >= 80).all() and before["train/error"].iloc[-1] < 80
    # Milestones are unaffected: lr 0.01 from iteration 46, 0.001 from 56.
    assert np.allclose(c.loc[48:52, "lr"], 0.01) and np.allclose(c.loc[56:, "lr"], 0.001)
    raw = pd.read_csv(run_dir / "metrics.csv")
    assert raw["warmup_end"].dropna().iloc[0] == switch


# --- exact resume ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted_run(tiny_cifar_archive, cifar_cache_root, tmp_path_factory):
    spec = tiny_spec(tiny_cifar_archive, cifar_cache_root)
    run_dir = tmp_path_factory.mktemp("runs") / "uninterrupted"
    return spec, run(spec, run_dir), run_dir


def assert_same_run(resumed_dir: Path, resumed: dict, reference_dir: Path, reference: dict) -> None:
    got, want = curves(resumed_dir), curves(reference_dir)
    assert got.index.tolist() == want.index.tolist(), "the resumed run logs other iterations"
    pd.testing.assert_frame_equal(got, want, rtol=1e-5, atol=1e-6)
    assert resumed["final"]["test/error"] == pytest.approx(reference["final"]["test/error"], abs=1e-6)
    assert resumed["final"]["test/loss"] == pytest.approx(reference["final"]["test/loss"], rel=1e-5)
    assert resumed["iterations"] == reference["iterations"] and resumed["status"] == "finished"


@pytest.mark.parametrize("after", [9, 12], ids=["mid-interval", "at-an-evaluation"])
def test_train_resume_after_ctrl_c_matches_uninterrupted(uninterrupted_run, tmp_path, send_signal, after):
    spec, reference, reference_dir = uninterrupted_run
    run_dir = tmp_path / "interrupted"
    stopped = interrupted_run(spec, run_dir, after, send_signal)
    assert stopped["status"] == "interrupted" and stopped["iterations"] == after and "finished" not in stopped
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == after
    resumed = run(spec, run_dir, resume=True)
    assert (run_dir / "metrics-0.csv").exists()
    assert resumed["wall_time_s"] > stopped["wall_time_s"]
    assert_same_run(run_dir, resumed, reference_dir, reference)
    # Each process that trained it is a part, with its own commit, hardware and iterations.
    parts = [(p["from_iteration"], p["to_iteration"], p["status"]) for p in resumed["parts"]]
    assert parts == [(0, after, "interrupted"), (after, reference["iterations"], "finished")]
    assert all(p["commit"] == resumed["commit"] and p["hardware"] == resumed["hardware"] for p in resumed["parts"])
    assert sum(p["wall_time_s"] for p in resumed["parts"]) == pytest.approx(resumed["wall_time_s"])
    assert resumed["started"] <= resumed["parts"][1]["started"] <= resumed["parts"][1]["ended"] == resumed["finished"]


def test_train_stops_at_the_deadline_and_resumes_as_if_uninterrupted(uninterrupted_run, tmp_path):
    """--stop-after: a deadline already past stops after the first iteration, with a checkpoint."""
    spec, reference, reference_dir = uninterrupted_run
    run_dir = tmp_path / "time-limited"
    threads = torch.get_num_threads()
    try:
        stopped = train(spec, RunOptions(run_dir=run_dir, wandb="off", progress=False, deadline=time.time()), CPU1)
    finally:
        torch.set_num_threads(threads)
    assert (stopped["status"], stopped["stopped_by"], stopped["iterations"]) == ("interrupted", "time limit", 1)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 1
    assert_same_run(run_dir, run(spec, run_dir, resume=True), reference_dir, reference)


def test_train_resume_after_a_crash_matches_uninterrupted(uninterrupted_run, tmp_path, monkeypatch):
    # A killed job resumes from the last periodic checkpoint (iteration 8) and redoes iterations 9-10.
    spec, reference, reference_dir = uninterrupted_run
    original = ClassifierModule.on_train_batch_start

    def crash(self, batch, batch_idx):
        if self.global_step == 10:
            raise RuntimeError("simulated crash")
        return original(self, batch, batch_idx)

    run_dir = tmp_path / "crashed"
    with monkeypatch.context() as patch:
        patch.setattr(ClassifierModule, "on_train_batch_start", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(spec, run_dir)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8
    resumed = run(spec, run_dir, resume=True)
    assert_same_run(run_dir, resumed, reference_dir, reference)
    parts = [(p["from_iteration"], p["to_iteration"], p["status"]) for p in resumed["parts"]]
    assert parts == [(0, 10, "failed"), (8, reference["iterations"], "finished")]  # iterations 9-10 twice


def test_train_resume_of_a_run_begun_before_parts_were_listed_lumps_its_earlier_parts(
    uninterrupted_run, tmp_path, send_signal
):
    spec, reference, _ = uninterrupted_run
    run_dir = tmp_path / "older"
    interrupted_run(spec, run_dir, 9, send_signal)
    record = json.loads((run_dir / "run.json").read_text())
    del record["parts"]  # as an older version of the suite wrote it
    (run_dir / "run.json").write_text(json.dumps({**record, "commit": "0123abcd", "hardware": "an older machine"}))
    earlier, latest = run(spec, run_dir, resume=True)["parts"]
    assert (earlier["from_iteration"], earlier["to_iteration"], earlier["commit"]) == (0, 9, "0123abcd")
    assert earlier["hardware"] == "an older machine" and "latest" in earlier["lumped"]
    assert (latest["from_iteration"], latest["to_iteration"]) == (9, reference["iterations"])
    assert latest["commit"] != "0123abcd" and "lumped" not in latest


def test_train_resume_keeps_the_warmup_switch(warmup_run, tmp_path, send_signal):
    spec, reference, reference_dir = warmup_run
    after = reference["warmup_end_iter"] + 6  # past the switch, mid-interval
    run_dir = tmp_path / "interrupted"
    stopped = interrupted_run(spec, run_dir, after, send_signal)
    assert stopped["status"] == "interrupted" and stopped["warmup_end_iter"] == reference["warmup_end_iter"]
    resumed = run(spec, run_dir, resume=True)
    assert resumed["warmup_end_iter"] == reference["warmup_end_iter"]
    assert_same_run(run_dir, resumed, reference_dir, reference)


# --- divergence ---------------------------------------------------------------------------------------


def test_train_absurd_lr_stops_with_a_clear_error_and_a_finite_checkpoint(
    tiny_cifar_archive, cifar_cache_root, tmp_path
):
    spec = tiny_spec(
        tiny_cifar_archive, cifar_cache_root, iters=40, milestones=(30, 35), lr=1e6, log_every=1, checkpoint_every=1
    )
    run_dir = tmp_path / "diverged"
    ctrl_c = signal.getsignal(signal.SIGINT)
    with pytest.raises(NonFiniteLossError, match="lower --lr"):
        run(spec, run_dir)
    assert signal.getsignal(signal.SIGINT) is ctrl_c, "the run's Ctrl-C handler outlived it"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "diverged" and record["wall_time_s"] > 0
    # Checkpoints every iteration: last.ckpt must hold the last good state, never the diverged one.
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] >= 1
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())


# --- the `train` command ---------------------------------------------------------------------------------


def cli_args(data: Path, cache_root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "resnet8",
        "--data",
        str(data),
        "--data-root",
        str(cache_root),
        "--allow-partial",
        "--iterations",
        "8",
        "--batch-size",
        "16",
        "--log-every",
        "2",
        "--eval-every",
        "4",
        "--checkpoint-every",
        "4",
        "--out",
        str(out),
        "--wandb",
        "off",
        "--no-progress",
        "--accelerator",
        "cpu",
        "--threads",
        "1",
        *extra,
    ]


def test_cli_train_runs_and_prints_a_summary(tiny_cifar_archive, cifar_cache_root, tmp_path, capsys):
    assert main(cli_args(tiny_cifar_archive, cifar_cache_root, tmp_path / "runs")) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert out.startswith("resnet8 seed 0: test error") and "after 8 iterations" in out
    record = json.loads((tmp_path / "runs" / "resnet8-s0" / "run.json").read_text())
    # --iterations without --milestones scales the paper's schedule: drops at 50% and 75%.
    assert record["status"] == "finished" and record["spec"]["schedule"]["milestones"] == [4, 6]
    assert f"{record['final']['test/error']:.2f}%" in out


def terminal_lines(text: str) -> list[str]:
    """The non-empty lines a terminal shows: a progress bar that redraws itself with '\\r' leaves nothing."""
    return [shown for line in text.split("\n") if (shown := line.rsplit("\r", 1)[-1].strip())]


def write_wrong_size_folder(root: Path) -> Path:
    for split, count in (("train", 2), ("test", 1)):
        for cls in CIFAR10_CLASSES:
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (32, 32) if cls != "frog" else (28, 28)).save(root / split / cls / f"{i}.png")
    return root


@pytest.mark.parametrize(
    "case",
    [
        "missing path",
        "corrupt archive",
        "wrong image size",
        "milestones past the end",
        "negative lr",
        "unknown model",
        "missing accelerator",
        "strategy typo",
        "accelerator without its library",
        "too few iterations for the default drops",
    ],
)
def test_cli_train_bad_input_exits_2_with_one_line(case, tiny_cifar_archive, cifar_cache_root, tmp_path, capsys):
    data, extra = tiny_cifar_archive, []
    if case == "missing path":
        data = tmp_path / "no-such-cifar"
    elif case == "corrupt archive":
        data = tmp_path / "corrupt.tar.gz"
        data.write_bytes(tiny_cifar_archive.read_bytes()[:2000])
    elif case == "wrong image size":
        data = write_wrong_size_folder(tmp_path / "wrong-size")
    elif case == "milestones past the end":
        extra = ["--milestones", "4,9"]
    elif case == "negative lr":
        extra = ["--lr", "-0.1"]
    elif case == "missing accelerator":
        extra = ["--accelerator", "gpu", "--devices", "64"]  # more GPUs than any one machine here has, or none
    elif case == "strategy typo":
        extra = ["--strategy", "dpp"]
    elif case == "too few iterations for the default drops":
        extra = ["--iterations", "2"]  # 50% and 75% of 2 would both be iteration 1
    elif case == "accelerator without its library":
        extra = ["--accelerator", "tpu"]  # Lightning needs torch_xla for it, which this project never installs
    out = tmp_path / "runs"
    args = cli_args(data, cifar_cache_root, out, *extra)
    if case == "unknown model":
        args[1] = "resnet21"
    assert main(args) == 2
    lines = terminal_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("resnet-repro train: error: "), lines
    if case == "too few iterations for the default drops":  # names the flag the user gave, not one they did not
        assert "--iterations 2 is too short" in lines[0] and "give --milestones" in lines[0]
    assert not out.exists() or not any(out.iterdir()), "a failed start left a run directory behind"


def test_cli_train_resume_continues_an_interrupted_run(
    tiny_cifar_archive, cifar_cache_root, tmp_path, capsys, send_signal
):
    args = cli_args(tiny_cifar_archive, cifar_cache_root, tmp_path / "runs")
    with send_signal(signal.SIGINT, after=3):
        assert main(args) == 130
    assert "--resume" in capsys.readouterr().out
    assert main(args) == 2 and "--resume" in capsys.readouterr().err  # will not overwrite it
    assert main([*args, "--resume"]) == 0
    record = json.loads((tmp_path / "runs" / "resnet8-s0" / "run.json").read_text())
    assert record["status"] == "finished" and record["iterations"] == 8


def test_cli_train_stop_after_exits_3_and_resume_finishes(tiny_cifar_archive, cifar_cache_root, tmp_path, capsys):
    args = cli_args(tiny_cifar_archive, cifar_cache_root, tmp_path / "runs")
    assert main([*args, "--stop-after", "0s"]) == 3
    assert "stopped at the --stop-after time limit at iteration 1" in capsys.readouterr().out
    assert main([*args, "--resume", "--stop-after", "1h"]) == 0
    record = json.loads((tmp_path / "runs" / "resnet8-s0" / "run.json").read_text())
    assert (record["status"], record["iterations"], record["stopped_by"]) == ("finished", 8, None)


def test_python_m_resnet_repro_train_bad_lr_exits_2(tiny_cifar_archive, cifar_cache_root, tmp_path):
    out = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "resnet_repro", *cli_args(tiny_cifar_archive, cifar_cache_root, out), "--lr", "-1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["resnet-repro train: error: --lr must be positive, got -1.0"]
    assert not out.exists()


def test_train_killed_during_an_evaluation_loses_no_evaluation(uninterrupted_run, tmp_path, monkeypatch):
    # Iteration 12 is both a checkpoint (every 4) and an evaluation (every 6) step: a job killed while it
    # evaluates must resume from the checkpoint before (8) and evaluate 12 again, not skip it.
    spec, reference, reference_dir = uninterrupted_run
    original = ClassifierModule.validation_step

    def killed(self, batch, batch_idx, dataloader_idx=0):
        if self.global_step == 12:
            raise RuntimeError("simulated kill during evaluation")
        return original(self, batch, batch_idx, dataloader_idx)

    run_dir = tmp_path / "killed"
    with monkeypatch.context() as patch:
        patch.setattr(ClassifierModule, "validation_step", killed)
        with pytest.raises(RuntimeError, match="simulated kill"):
            run(spec, run_dir)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8
    resumed = run(spec, run_dir, resume=True)
    assert_same_run(run_dir, resumed, reference_dir, reference)
    assert 12 in curves(run_dir)["test/error"].dropna().index
    parts = [(p["from_iteration"], p["to_iteration"], p["status"]) for p in resumed["parts"]]
    assert parts == [(0, 12, "failed"), (8, reference["iterations"], "finished")]


# --- cluster life: SIGTERM, a full disk, a lock, a moved or half-started run directory ---------------------


def test_train_sigterm_checkpoints_stops_and_resumes_as_if_uninterrupted(uninterrupted_run, tmp_path, send_signal):
    spec, reference, reference_dir = uninterrupted_run
    run_dir = tmp_path / "terminated"
    stopped = interrupted_run(spec, run_dir, 9, send_signal, signal.SIGTERM)
    assert (stopped["status"], stopped["stopped_by"], stopped["iterations"]) == ("interrupted", "SIGTERM", 9)
    assert json.loads((run_dir / "run.json").read_text())["stopped_by"] == "SIGTERM"
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 9
    assert_same_run(run_dir, run(spec, run_dir, resume=True), reference_dir, reference)


def test_cli_train_sigterm_exits_143(tiny_cifar_archive, cifar_cache_root, tmp_path, send_signal, capsys):
    with send_signal(signal.SIGTERM, after=3):
        assert main(cli_args(tiny_cifar_archive, cifar_cache_root, tmp_path / "runs")) == 143
    assert "interrupted at iteration 3" in capsys.readouterr().out
    record = json.loads((tmp_path / "runs" / "resnet8-s0" / "run.json").read_text())
    assert (record["status"], record["stopped_by"]) == ("interrupted", "SIGTERM")


def fail_checkpoint_writes(monkeypatch, code: int = errno.ENOSPC) -> None:
    """Every write of checkpoints/last.ckpt hits a full disk after half its bytes; other files write fine."""
    real_open = builtins.open

    class FillsUp:
        def __init__(self, handle, path):
            self.handle, self.path = handle, path

        def write(self, data):
            self.handle.write(bytes(data)[: len(data) // 2])
            raise OSError(code, os.strerror(code), str(self.path))

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.handle.close()

    def opener(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FillsUp(handle, file) if "w" in mode and "last.ckpt" in Path(file).name else handle

    monkeypatch.setattr("resnet_repro.files.open", opener, raising=False)


def test_cli_train_resume_on_a_full_disk_is_one_line_and_keeps_the_checkpoint(
    tiny_cifar_archive, cifar_cache_root, tmp_path, monkeypatch, capsys
):
    args = cli_args(tiny_cifar_archive, cifar_cache_root, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "resnet8-s0"
    assert main([*args, "--stop-after", "0s"]) == 3  # a checkpoint at iteration 1
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = sha256(last)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        fail_checkpoint_writes(patch)
        assert main([*args, "--resume"]) == 2
    lines = terminal_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("resnet-repro train: error: cannot write "), lines
    assert str(run_dir / "checkpoints") in lines[0] and "No space left on device" in lines[0]
    assert sha256(last) == saved and torch.load(last, weights_only=False)["global_step"] == 1
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"], "a temp file was left beside last.ckpt"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert main([*args, "--resume"]) == 0  # space freed: the same command continues
    record = json.loads((run_dir / "run.json").read_text())
    assert (record["status"], record["iterations"]) == ("finished", 8)


@pytest.fixture
def no_process_launch(monkeypatch):
    """A refusal that regressed would start 63 CPU processes or wait forever for a second node: fail instead."""
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    def launch(self, *args, **kwargs):
        raise AssertionError("the run was not refused: Lightning began launching processes")

    for launcher in (_SubprocessScriptLauncher, _MultiProcessingLauncher):
        monkeypatch.setattr(launcher, "launch", launch)


def exit_code(argv: list[str]) -> int:
    """main()'s exit status, whether a command returns it or its argument parser exits with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize(
    "extra, said",
    [
        pytest.param(["--precision", "16-mixed"], "--precision 16-mixed needs a GPU", id="16-mixed on a CPU"),
        pytest.param(
            ["--devices", str(max(64, (os.cpu_count() or 1) + 1))], "CPU processes", id="more processes than cores"
        ),
        pytest.param(["--num-nodes", "2"], "needs a multi-node launcher", id="several nodes without a launcher"),
        pytest.param(["--lr", "nan"], "expected a finite number, got 'nan'", id="lr nan"),
        pytest.param(["--lr", "inf"], "expected a finite number, got 'inf'", id="lr inf"),
        pytest.param(["--seed", "-1"], "--seed must be between 0 and 4294967295, got -1", id="negative seed"),
    ],
)
def test_cli_train_refuses_what_cannot_run_here_in_one_line(
    extra, said, tiny_cifar_archive, cifar_cache_root, tmp_path, monkeypatch, capsys, no_process_launch
):
    for launcher_variable in ("SLURM_NTASKS", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(launcher_variable, raising=False)
    out = tmp_path / "runs"
    assert exit_code(cli_args(tiny_cifar_archive, cifar_cache_root, out, *extra)) == 2
    lines = terminal_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("resnet-repro train: error: ") and said in lines[0], lines
    assert not out.exists() or not any(out.iterdir()), "a refused run left files behind"


def test_python_m_resnet_repro_train_16_mixed_on_a_cpu_is_one_line(tiny_cifar_archive, cifar_cache_root, tmp_path):
    """In a terminal, not only in-process: Lightning's own warning about 16-mixed on a CPU is not a second line."""
    out = tmp_path / "runs"
    args = cli_args(tiny_cifar_archive, cifar_cache_root, out, "--precision", "16-mixed")
    result = subprocess.run([sys.executable, "-m", "resnet_repro", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "resnet-repro train: error: --precision 16-mixed needs a GPU; on a CPU use bf16-mixed or the paper's 32-true"
    ]
    assert not out.exists()


def write_killed_before_first_checkpoint(run_dir: Path) -> None:
    """What `kill -9` (or a power cut) leaves before the first checkpoint: a running record and a log."""
    run_dir.mkdir(parents=True)
    spec = TrainSpec(model="resnet8").to_dict()  # training writes the spec into run.json before any iteration
    (run_dir / "run.json").write_text(json.dumps({"run_id": run_dir.name, "status": "running", "spec": spec}))
    (run_dir / "metrics.csv").write_text("epoch,lr,step,train/error,train/loss\n0,0.1,1,90.0,2.3\n")


def test_cli_train_starts_again_a_run_killed_before_its_first_checkpoint(
    tiny_cifar_archive, cifar_cache_root, tmp_path, capsys
):
    run_dir = tmp_path / "runs" / "resnet8-s0"
    write_killed_before_first_checkpoint(run_dir)
    assert main(cli_args(tiny_cifar_archive, cifar_cache_root, tmp_path / "runs")) == 0
    assert "the earlier attempt stopped before its first checkpoint; starting it again" in capsys.readouterr().out
    record = json.loads((run_dir / "run.json").read_text())
    assert (record["status"], record["iterations"]) == ("finished", 8)
    assert not list(run_dir.glob("metrics-*.csv")), "the dead attempt's log was kept as part of this run"
    assert curves(run_dir)["train/loss"].dropna().index.tolist() == [2, 4, 6, 8]


def test_cli_train_resume_removes_the_checkpoint_a_killed_writer_left_half_written(
    tiny_cifar_archive, cifar_cache_root, tmp_path, send_signal
):
    from resnet_repro import files

    argv = cli_args(tiny_cifar_archive, cifar_cache_root, tmp_path / "runs")
    with send_signal(signal.SIGTERM, after=4):
        assert main(argv) == 143
    checkpoints = tmp_path / "runs" / "resnet8-s0" / "checkpoints"
    writer = subprocess.Popen([sys.executable, "-c", ""])  # a writer that died mid-save (kill -9 skips its cleanup)
    writer.wait()
    half = checkpoints / f".last.ckpt.{files.host()}.{writer.pid}.140000000000000.tmp"
    half.write_bytes(b"half a checkpoint")
    assert main([*argv, "--resume"]) == 0
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]


def test_cli_train_resume_of_a_run_killed_before_its_first_checkpoint_says_to_start_it_again(
    tiny_cifar_archive, cifar_cache_root, tmp_path, capsys
):
    run_dir = tmp_path / "runs" / "resnet8-s0"
    write_killed_before_first_checkpoint(run_dir)
    record = (run_dir / "run.json").read_bytes()
    assert main([*cli_args(tiny_cifar_archive, cifar_cache_root, tmp_path / "runs"), "--resume"]) == 2
    lines = terminal_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "nothing to resume" in lines[0], lines
    assert "run without --resume to start it again" in lines[0]
    assert (run_dir / "run.json").read_bytes() == record


def test_train_refuses_a_run_directory_another_process_holds(uninterrupted_run, tmp_path, send_signal):
    spec, reference, reference_dir = uninterrupted_run
    run_dir = tmp_path / "held"
    interrupted_run(spec, run_dir, 9, send_signal)
    files = {
        p: p.read_bytes()
        for p in (run_dir / "run.json", run_dir / "metrics.csv", run_dir / "checkpoints" / "last.ckpt")
    }
    holder = RunDir(run_dir)
    holder.lock()  # flock conflicts between two open files even in one process: this stands in for another one
    try:
        with pytest.raises(UserError, match="being trained by another process"):
            run(spec, run_dir, resume=True)
        assert {p: p.read_bytes() for p in files} == files
    finally:
        holder.unlock()
    assert_same_run(run_dir, run(spec, run_dir, resume=True), reference_dir, reference)


def test_train_resumes_a_moved_run_directory_in_place(uninterrupted_run, tmp_path, send_signal):
    spec, reference, reference_dir = uninterrupted_run
    original = tmp_path / "scratch" / "run"
    interrupted_run(spec, original, 9, send_signal)
    moved = tmp_path / "home" / "run"
    shutil.copytree(original, moved)
    before = sha256(original / "checkpoints" / "last.ckpt")
    resumed = run(spec, moved, resume=True)
    assert [p.name for p in (moved / "checkpoints").iterdir()] == ["last.ckpt"]
    checkpoint = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == spec.schedule.max_iters
    assert_same_run(moved, resumed, reference_dir, reference)
    assert sha256(original / "checkpoints" / "last.ckpt") == before, "resuming the copy wrote to the original"


def test_train_resumes_from_the_copy_that_results_runs_keeps(uninterrupted_run, tmp_path, send_signal):
    # `report --keep-checkpoints`: a clean clone elsewhere copies results/runs/<id> into its runs directory.
    spec, reference, reference_dir = uninterrupted_run
    interrupted_run(spec, tmp_path / "machine-a" / "run", 9, send_signal)
    RunDir(tmp_path / "machine-a" / "run").copy_logs(tmp_path / "results" / "runs", with_checkpoint=True)
    elsewhere = tmp_path / "machine-b" / "run"
    shutil.copytree(tmp_path / "results" / "runs" / "run", elsewhere)
    assert_same_run(elsewhere, run(spec, elsewhere, resume=True), reference_dir, reference)


def test_train_resume_of_a_finished_run_changes_nothing(finished_run, capsys):
    spec, record, run_dir = finished_run
    logs = {
        p: p.read_bytes() for p in [*run_dir.glob("*.*"), run_dir / "checkpoints" / "last.ckpt"] if p.name != ".lock"
    }
    capsys.readouterr()
    again = run(spec, run_dir, resume=True)
    assert "nothing to resume, nothing changed" in capsys.readouterr().out
    assert again == json.loads(logs[run_dir / "run.json"])
    assert again["wall_time_s"] == record["wall_time_s"]
    assert {p: p.read_bytes() for p in logs} == logs
    assert sorted(p.name for p in run_dir.glob("*.*") if p.name != ".lock") == sorted(
        p.name for p in logs if p.parent == run_dir
    )


def test_train_non_finite_evaluation_is_a_divergence(tiny_cifar_archive, cifar_cache_root, tmp_path, monkeypatch):
    """Finite training loss, NaN test loss (the weights blew up between two logged intervals): diverged."""
    original = ClassifierModule.forward

    def nan_when_evaluating(self, x):
        logits = original(self, x)
        return logits if self.training else torch.full_like(logits, float("nan"))

    monkeypatch.setattr(ClassifierModule, "forward", nan_when_evaluating)
    run_dir = tmp_path / "diverged"
    with pytest.raises(NonFiniteLossError, match="test loss became nan at iteration 6") as raised:
        run(tiny_spec(tiny_cifar_archive, cifar_cache_root), run_dir)  # evaluates at 6, checkpoints at 4
    assert "checkpoints/last.ckpt holds the last finite state (iteration 4)" in str(raised.value)
    record = json.loads((run_dir / "run.json").read_text())
    assert (record["status"], record["diverged_at"]) == ("diverged", 6)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4


def test_train_diverging_before_its_first_checkpoint_says_none_was_written(
    tiny_cifar_archive, cifar_cache_root, tmp_path
):
    spec = tiny_spec(
        tiny_cifar_archive, cifar_cache_root, iters=40, milestones=(30, 35), lr=1e6, log_every=1, checkpoint_every=20
    )
    run_dir = tmp_path / "diverged"
    with pytest.raises(NonFiniteLossError, match="diverged before its first checkpoint, so none was written"):
        run(spec, run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "diverged" and 1 <= record["diverged_at"] < 20
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()


def test_cli_train_divergence_exits_1_and_says_what_is_left(tiny_cifar_archive, cifar_cache_root, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "resnet8-s0"
    args = cli_args(tiny_cifar_archive, cifar_cache_root, tmp_path / "runs", "--lr", "1e6", "--checkpoint-every", "8")
    assert main(args) == 1
    lines = terminal_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("resnet-repro train: stopped: "), lines
    assert lines[0].endswith(
        "; it diverged before its first checkpoint, so none was written; try a lower --lr or warm-up"
    )
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "diverged" and 1 <= record["diverged_at"] < 8
    assert not (run_dir / "checkpoints").exists()


def signal_in_the_final_evaluation(monkeypatch, signum: int, max_iters: int) -> None:
    """Send `signum` to this process from the first test batch evaluated at the last iterate."""
    original, sent = ClassifierModule.validation_step, []

    def send(self, batch, batch_idx, dataloader_idx=0):
        if self.global_step == max_iters and not sent:
            sent.append(True)
            os.kill(os.getpid(), signum)
        return original(self, batch, batch_idx, dataloader_idx)

    monkeypatch.setattr(ClassifierModule, "validation_step", send)


@pytest.mark.parametrize("signum, reason", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "ctrl-c")])
@pytest.mark.parametrize("eval_every", [6, 4], ids=["evaluated-after-fit", "evaluated-inside-fit"])
def test_a_signal_in_the_final_evaluation_stops_it_and_the_run_resumes_to_the_same_numbers(
    tiny_cifar_archive, cifar_cache_root, tmp_path, monkeypatch, signum, reason, eval_every
):
    # 20 iterations: evaluated every 6, the last iterate after fit; every 4, inside fit's last step.
    spec = tiny_spec(tiny_cifar_archive, cifar_cache_root, eval_every=eval_every)
    reference = run(spec, tmp_path / "reference")
    before = signal.getsignal(signum)
    with monkeypatch.context() as patch:
        signal_in_the_final_evaluation(patch, signum, spec.schedule.max_iters)
        stopped = run(spec, tmp_path / "run")
    assert signal.getsignal(signum) is before
    assert (stopped["status"], stopped["stopped_by"], stopped["iterations"]) == ("interrupted", reason, 20)
    assert "error" not in stopped and json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 20
    resumed = run(spec, tmp_path / "run", resume=True)
    assert_same_run(tmp_path / "run", resumed, tmp_path / "reference", reference)
    responses = [(r["layer"], r["std"]) for r in resumed["layer_responses"]]
    assert responses == [(r["layer"], pytest.approx(r["std"], rel=1e-5)) for r in reference["layer_responses"]]


def test_cli_sigterm_in_the_final_evaluation_exits_143(
    tiny_cifar_archive, cifar_cache_root, tmp_path, monkeypatch, capsys
):
    signal_in_the_final_evaluation(monkeypatch, signal.SIGTERM, 8)
    # Evaluated every 6 of 8 iterations: the last iterate is evaluated after fit, under Lightning's own handler.
    assert main(cli_args(tiny_cifar_archive, cifar_cache_root, tmp_path / "runs", "--eval-every", "6")) == 143
    record = json.loads((tmp_path / "runs" / "resnet8-s0" / "run.json").read_text())
    assert (record["status"], record["stopped_by"], record["iterations"]) == ("interrupted", "SIGTERM", 8)


def test_ctrl_c_during_precise_bn_stops_it_and_the_run_resumes_to_the_same_numbers(
    tiny_cifar_archive, cifar_cache_root, tmp_path, monkeypatch
):
    import resnet_repro.training as training

    spec = tiny_spec(tiny_cifar_archive, cifar_cache_root, iters=8, milestones=(4, 6), precise_bn=32)
    reference = run(spec, tmp_path / "reference")
    original = training.precise_bn

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(training, "precise_bn", interrupted)
        stopped = run(spec, tmp_path / "run")
    assert (stopped["status"], stopped["stopped_by"], stopped["iterations"]) == ("interrupted", "ctrl-c", 8)
    assert stopped["precise_bn_images"] is None
    resumed = run(spec, tmp_path / "run", resume=True)
    assert resumed["precise_bn_images"] == reference["precise_bn_images"]
    assert_same_run(tmp_path / "run", resumed, tmp_path / "reference", reference)
