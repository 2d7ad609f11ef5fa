"""Smoke tests for benchmarks/throughput.py, numerics.py and imagenet_pipeline.py, so the scripts cannot rot; not tests of speed."""

import importlib.util
import json
import math
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "throughput.py"


@pytest.fixture(scope="module")
def throughput():
    """The benchmark script, imported as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_args(tiny_cifar_archive, cifar_cache_root):
    """Flags for a run of seconds: resnet8, batch 16, 1 warm-up + 2 timed iterations, one thread."""
    return [
        "--models",
        "resnet8",
        "--batch-size",
        "16",
        "--warmup",
        "1",
        "--iters",
        "2",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--data",
        str(tiny_cifar_archive),
        "--data-root",
        str(cifar_cache_root),
        "--allow-partial",
    ]


def test_throughput_main_writes_md_and_csv(throughput, tiny_args, tmp_path, capsys):
    assert throughput.main([*tiny_args, "--repeats", "1", "--gemm-size", "64", "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "throughput.csv")
    assert list(table.columns) == throughput.CSV_COLUMNS
    assert table["path"].tolist() == ["conventional", "ours-plain", "ours-lightning"]
    assert (table["model"] == "resnet8").all() and (table["timed_iters"] == 2).all()
    assert (table["images_per_s"] > 0).all() and (table["gflops"] > 0).all()
    assert table.set_index("path").vs_conventional["conventional"] == pytest.approx(1.0)
    md = (tmp_path / "throughput.md").read_text()
    for label in throughput.PATHS.values():
        assert label in md
    assert "| resnet8 | 2 |" in md and "3/1" in md and "3/2" in md
    assert "python benchmarks/throughput.py --models resnet8" in md  # the exact command is recorded
    assert "repeat 1/1  ours-lightning" in capsys.readouterr().out  # progress lines


def test_throughput_reports_the_host_overhead_of_lightning_per_iteration(throughput, tiny_args, tmp_path):
    assert (
        throughput.main(
            [*tiny_args, "--repeats", "1", "--gemm-size", "64", "--host-iters", "3", "--out", str(tmp_path)]
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "throughput.csv")
    host = table.iloc[0]
    assert table["host_overhead_s"].nunique() == 1  # one figure for the run, on every row like the GEMM's
    assert host.host_plain_s > 0 and host.host_lightning_s > 0  # elapsed seconds per iteration
    overhead = host.host_overhead_s
    assert math.isfinite(overhead) and overhead == pytest.approx(
        host.host_lightning_s - host.host_plain_s, abs=1e-5
    )  # each rounded in the CSV
    assert host.host_cpu.startswith("CPU ") and "resnet8" in host.host_setup and pd.isna(host.host_error)
    md = (tmp_path / "throughput.md").read_text()
    assert "Host overhead of the Lightning path" in md and "a CPU figure" in md and host.host_cpu in md
    assert f"{overhead * 1e3:+.2f} ms per iteration" in md


def test_throughput_runs_every_path_under_one_cudnn_benchmark_setting(throughput, tiny_args, tmp_path, monkeypatch):
    """Lightning's Trainer sets cudnn.benchmark itself (train() asks for autotuning); every row must say the
    setting asked for, including paths measured after a Lightning run (the order rotates between repeats)."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    argv = [*tiny_args, "--repeats", "2", "--gemm-size", "64", "--host-iters", "2", "--no-cudnn-benchmark"]
    assert throughput.main([*argv, "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "throughput.csv")
    assert len(table) == 3 and table["cudnn_benchmark"].tolist() == [False] * 3
    assert "(`torch.backends.cudnn.benchmark`) False in every path" in (tmp_path / "throughput.md").read_text()
    assert torch.backends.cudnn.benchmark is True  # the process's setting is restored afterwards


def test_throughput_a_failing_path_is_recorded_and_the_others_are_written(
    throughput, tiny_args, tmp_path, monkeypatch, capsys
):
    def broken(*args, **kwargs):
        raise RuntimeError("Lightning went wrong\nsecond line")

    monkeypatch.setattr(throughput, "lightning_run", broken)
    argv = [*tiny_args, "--repeats", "1", "--gemm-size", "64", "--host-iters", "2", "--out", str(tmp_path)]
    assert throughput.main(argv) == 1  # a path failed
    table = pd.read_csv(tmp_path / "throughput.csv").set_index("path")
    assert list(table.index) == ["conventional", "ours-plain", "ours-lightning"]
    assert (table.loc[["conventional", "ours-plain"], "images_per_s"] > 0).all()
    assert table.loc[["conventional", "ours-plain"], "error"].isna().all()
    assert pd.isna(table.images_per_s["ours-lightning"])
    assert table.error["ours-lightning"] == "RuntimeError: Lightning went wrong"
    assert pd.isna(table.host_overhead_s.iloc[0]) and "Lightning went wrong" in table.host_error.iloc[0]
    md = (tmp_path / "throughput.md").read_text()
    assert "failed: RuntimeError: Lightning went wrong" in md and "second line" not in md
    err = capsys.readouterr().err.strip().splitlines()
    assert "failed" in err[-1] and "ours-lightning" in err[-1]


def test_throughput_bf16_autocasts_every_path_and_writes_its_own_files(throughput, tiny_args, tmp_path):
    assert (
        throughput.main(
            [*tiny_args, "--repeats", "1", "--gemm-size", "64", "--precision", "bf16-mixed", "--out", str(tmp_path)]
        )
        == 0
    )
    assert not (tmp_path / "throughput.csv").exists()  # the fp32 figures are not overwritten
    table = pd.read_csv(tmp_path / "throughput-bf16-mixed.csv")
    assert (
        (table["precision"] == "bf16-mixed").all() and (~table["compile"]).all() and (table["images_per_s"] > 0).all()
    )
    md = (tmp_path / "throughput-bf16-mixed.md").read_text()
    assert "batch 16, bf16-mixed, on CPU" in md and "The GEMM stays fp32" in md


def test_throughput_plain_loop_autocasts_to_the_requested_precision(throughput):
    seen = []
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    net.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    batches = iter([(torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 0]))] * 3)
    throughput.plain_loop(net, batches, 1, 2, 4, torch.device("cpu"), "bf16-mixed")
    assert seen == [torch.bfloat16] * 3


def test_throughput_output_names_say_the_numerics(throughput):
    assert throughput.output_stem("32-true", False) == "throughput"  # the fp32 figures
    assert throughput.output_stem("bf16-mixed", True) == "throughput-bf16-mixed-compile"
    assert throughput.numerics_label("32-true", True) == "fp32 + torch.compile"


def test_throughput_summary_ratios_are_ratios_of_medians(throughput):
    raw = pd.DataFrame(
        [
            {"model": "resnet20", "path": path, "repeat": r, "images_per_s": rate, "timed_iters": 50}
            for path, rates in (
                ("conventional", [100, 90, 110]),
                ("ours-plain", [150, 160, 140]),
                ("ours-lightning", [144, 120, 150]),
            )
            for r, rate in enumerate(rates)
        ]
    )
    table = throughput.summarise(
        raw,
        [150.0, 170.0, 160.0],
        {"resnet20": 40_000_000},
        {
            "batch_size": 128,
            "precision": "32-true",
            "compile": False,
            "warmup_iters": 3,
            "repeats": 3,
            "threads": 2,
            "device": "cpu",
            "other_cpu": 0.0,
            "commit": "abc",
            "date": "today",
        },
    )
    ours = table.set_index("path").loc["ours-lightning"]
    assert (ours.images_per_s, ours.images_per_s_min, ours.images_per_s_max) == (144, 120, 150)
    assert ours.vs_conventional == pytest.approx(1.44) and ours.vs_ours_plain == pytest.approx(0.96)
    assert ours.gflops == pytest.approx(3 * 40e6 * 2 * 144 / 1e9)  # 34.56 GFLOP/s
    assert ours.gemm_fraction == pytest.approx(34.56 / 160)


def test_throughput_profile_prints_top_ops(throughput, tiny_args, tmp_path, capsys):
    assert throughput.main([*tiny_args, "--profile", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Self CPU" in out and "ms per iteration under the profiler" in out
    assert not (tmp_path / "throughput.csv").exists()  # profiling writes no results


def test_throughput_unknown_model_is_a_user_error(throughput, capsys):
    assert throughput.main(["--models", "resnet7"]) == 2
    err = capsys.readouterr().err
    assert "resnet7" in err and len(err.strip().splitlines()) == 1


# --- benchmarks/numerics.py: what bf16 and compile do to the final error ------------------------------


@pytest.fixture(scope="module")
def numerics():
    spec = importlib.util.spec_from_file_location("numerics", SCRIPT.parent / "numerics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_numerics_smoke_trains_each_variant_on_the_same_seeds_and_reuses_them(
    numerics, tiny_cifar_archive, cifar_cache_root, tmp_path, capsys
):
    args = [
        "--profile",
        "smoke",
        "--variants",
        "bf16-mixed",
        "--seeds",
        "2",
        "--jobs",
        "1",
        "--threads",
        "1",
        "--data",
        str(tiny_cifar_archive),
        "--data-root",
        str(cifar_cache_root),
        "--allow-partial",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "out"),
    ]
    assert numerics.main(args) == 0
    runs = pd.read_csv(tmp_path / "out" / "numerics.csv")
    assert sorted(zip(runs["variant"], runs["seed"], strict=True)) == [
        ("bf16-mixed", 0),
        ("bf16-mixed", 1),
        ("fp32", 0),
        ("fp32", 1),
    ]
    assert (runs["status"] == "finished").all() and (runs["images_per_s"] > 0).all()
    # fp32 runs share the artifacts' run cache; each other variant has its own, with its precision recorded
    records = {p.parent.parent.name: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("**/run.json")}
    assert records["numerics-bf16-mixed"]["hardware_flags"]["precision"] == "bf16-mixed"
    assert records["runs"]["hardware_flags"]["precision"] == "32-true"
    md = (tmp_path / "out" / "numerics.md").read_text()
    assert "| bf16-mixed | 2 |" in md and "noise band" in md and "profile: smoke" in md
    capsys.readouterr()
    assert numerics.main(args) == 0  # a second call trains nothing
    assert "0 to train" in capsys.readouterr().out


def test_numerics_compares_means_against_a_noise_band_from_the_fp32_seeds(numerics):
    runs = pd.DataFrame(
        {
            "variant": ["fp32"] * 2 + ["bf16-mixed"] * 2 + ["compile"] * 2,
            "final_test_error": [10.0, 12.0, 10.5, 11.7, 14.0, 15.0],
            "final_train_error": [5.0, 7.0, 6.0, 6.0, 9.0, 9.0],
            "images_per_s": [100.0, 100.0, 150.0, 170.0, 90.0, 90.0],
        }
    )
    table, noise = numerics.compare(runs)
    rows = table.set_index("variant")
    sigma = 2**0.5  # std (ddof=1) of 10 and 12
    assert noise == {"sigma": pytest.approx(sigma), "seeds": 2}
    assert rows.loc["bf16-mixed", "Δ test vs fp32"] == pytest.approx(0.1)
    assert rows.loc["bf16-mixed", "noise (2 SE)"] == pytest.approx(2 * sigma)  # 2 * sigma * sqrt(1/2 + 1/2)
    assert rows.loc["bf16-mixed", "speed vs fp32"] == "1.60x"
    lines = numerics.verdict(table, noise)
    assert "bf16-mixed: mean test error 0.10 points higher than fp32, inside" in lines[0]
    assert "compile: mean test error 3.50 points higher than fp32, OUTSIDE" in lines[1]


def test_numerics_unknown_variant_is_a_user_error(numerics, capsys):
    assert numerics.main(["--variants", "fp8"]) == 2
    assert "unknown variant(s) fp8" in capsys.readouterr().err


def test_numerics_interrupted_writes_nothing(
    numerics, tiny_cifar_archive, cifar_cache_root, tmp_path, monkeypatch, capsys
):
    """A table from whichever runs happened to finish would compare unlike sets of seeds."""

    def ctrl_c(todo, options, jobs):
        return [
            {"run_id": run.run_dir.name, "status": "interrupted", "stopped_by": "ctrl-c", "final": {}} for run in todo
        ]

    monkeypatch.setattr(numerics, "train_runs", ctrl_c)
    assert (
        numerics.main(
            [
                "--profile",
                "smoke",
                "--data",
                str(tiny_cifar_archive),
                "--data-root",
                str(cifar_cache_root),
                "--allow-partial",
                "--runs-dir",
                str(tmp_path / "runs"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 130
    )
    assert "nothing written" in capsys.readouterr().out and not (tmp_path / "out").exists()


# --- benchmarks/imagenet_pipeline.py: the ImageNet JPEG pipeline and the Table 1 nets -----------------


@pytest.fixture(scope="module")
def imagenet_pipeline():
    spec = importlib.util.spec_from_file_location("imagenet_pipeline", SCRIPT.parent / "imagenet_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def imagenet_smoke(imagenet_pipeline, tmp_path_factory):
    """One --smoke run (every step, seconds): its output folder and its JPEG cache."""
    base = tmp_path_factory.mktemp("imagenet-pipeline")
    argv = ["--smoke", "--out", str(base / "out"), "--cache", str(base / "cache")]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities")
        assert imagenet_pipeline.main(argv) == 0
    return base / "out", base / "cache"


def test_imagenet_pipeline_smoke_measures_every_step(imagenet_pipeline, imagenet_smoke):
    out, _ = imagenet_smoke
    pipeline = pd.read_csv(out / "imagenet-pipeline.csv")
    assert list(pipeline.columns) == imagenet_pipeline.PIPELINE_COLUMNS
    steps = pipeline.groupby("set", sort=False)["step"].apply(list).to_dict()
    assert steps == {
        "typical": ["read", "decode", "item", "device", "loader", "loader"],
        "large": ["read", "decode", "item"],
        "large, pre-resized to 480": ["read", "decode", "item"],
    }
    assert pipeline[pipeline.step == "loader"]["workers"].tolist() == [0, 1]
    assert (pipeline["images_per_s"] > 0).all() and (pipeline["images_per_cpu_s"] > 0).all()
    # The load is measured and reported, whatever it is: CI machines may be busy (a share above 1 was seen
    # there, since a child not yet reaped counts as another process), so no bound on its value.
    assert pd.api.types.is_float_dtype(pipeline["other_cpu"]) and pipeline["other_cpu"].notna().all()
    assert pipeline["commit"].notna().all()
    training = pd.read_csv(out / "imagenet-training.csv")
    assert list(training.columns) == imagenet_pipeline.TRAINING_COLUMNS
    assert training["model"].tolist() == ["resnet18", "resnet34", "resnet50"]
    assert (training["images_per_s"] > 0).all() and training["channels_last"].all()
    assert (training["mult_adds"] > 0).all() and (training["precision"] == "32-true").all()


def test_imagenet_pipeline_pages_state_target_machine_and_busy_share(imagenet_smoke):
    out, _ = imagenet_smoke
    pipeline = (out / "imagenet-pipeline.md").read_text()
    assert "(smoke run: says nothing)" in pipeline
    assert "Target: at least 330 training images/s per CPU core" in pipeline
    assert "| workers | images/s | per worker | per CPU-second |" in pipeline
    assert "typical 500x375" in pipeline and "of the CPU during these measurements" in pipeline
    assert f"torch {torch.__version__}" in pipeline and "torchvision " in pipeline and "commit " in pipeline
    assert "python benchmarks/imagenet_pipeline.py --smoke --out" in pipeline  # the exact command
    training = (out / "imagenet-training.md").read_text()
    assert "| resnet50 |" in training and "of the CPU during these measurements" in training


def test_imagenet_pipeline_generates_imagenet_like_jpegs_once(imagenet_pipeline, imagenet_smoke):
    _, cache = imagenet_smoke
    made = {p.parent.name: json.loads(p.read_text()) for p in cache.glob("*/done.json")}
    typical = made["500x375-8x2-q90"]
    assert (typical["width"], typical["height"], typical["images"]) == (500, 375, 16)
    assert 70 < typical["kb_mean"] < 160  # ImageNet's ~110 KB at 500x375; seeded, so not a flaky bound
    assert made["800x600-8x1-q90-short480"]["height"] == 480
    root = cache / "500x375-8x2-q90"
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.JPEG")}
    assert imagenet_pipeline.make_root(cache, (500, 375), 2) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.JPEG")} == before  # reused, not rewritten


def test_imagenet_pipeline_labels_a_busy_run(imagenet_pipeline):
    assert "busy" not in imagenet_pipeline._busy_line(0.05, 0.1, 1.0)
    assert "the machine was busy" in imagenet_pipeline._busy_line(0.4, 2.0, 3.0)


def test_imagenet_pipeline_user_errors_are_one_line(imagenet_pipeline, capsys):
    assert imagenet_pipeline.main(["--models", "resnet20"]) == 2
    assert "CIFAR net" in capsys.readouterr().err
    inside = SCRIPT.parents[1] / "jpeg-cache"
    assert imagenet_pipeline.main(["--smoke", "--cache", str(inside)]) == 2
    err = capsys.readouterr().err
    assert "inside the repository" in err and len(err.strip().splitlines()) == 1 and not inside.exists()


def test_imagenet_pipeline_only_training_in_bf16_writes_its_own_page(imagenet_pipeline, tmp_path):
    argv = [
        "--smoke",
        "--only",
        "training",
        "--models",
        "resnet18",
        "--precision",
        "bf16-mixed",
        "--out",
        str(tmp_path),
    ]
    assert imagenet_pipeline.main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "imagenet-training-bf16-mixed.csv",
        "imagenet-training-bf16-mixed.md",
    ]
    table = pd.read_csv(tmp_path / "imagenet-training-bf16-mixed.csv")
    assert table["precision"].tolist() == ["bf16-mixed"] and (table["images_per_s"] > 0).all()
    assert "batch 2, bf16-mixed, channels_last" in (tmp_path / "imagenet-training-bf16-mixed.md").read_text()
