"""DDP on CPU (gloo): two processes train one run, each on its half of every global batch."""

import json
import subprocess
import sys


def test_two_process_ddp_run_writes_one_record(tmp_path, tiny_cifar_archive, cifar_cache_root):
    out = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "resnet_repro",
        "train",
        "resnet8",
        "--iterations",
        "4",
        "--batch-size",
        "16",
        "--eval-every",
        "2",
        "--log-every",
        "2",
        "--checkpoint-every",
        "2",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--threads",
        "1",
        "--allow-partial",
        "--data",
        str(tiny_cifar_archive),
        "--data-root",
        str(cifar_cache_root),
        "--out",
        str(out),
        "--wandb",
        "off",
        "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test error") == 1  # one summary line, from rank 0
    record = json.loads((out / "resnet8-s0" / "run.json").read_text())
    assert record["status"] == "finished" and record["world_size"] == 2 and record["iterations"] == 4
    assert "2 processes" in record["hardware"]
    metrics = (out / "resnet8-s0" / "metrics.csv").read_text()
    assert "test/error" in metrics and "train/error" in metrics
