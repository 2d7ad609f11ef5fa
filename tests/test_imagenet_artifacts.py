"""Every ImageNet artifact (Fig. 4, Tables 2-5) end to end at the smoke profile, through the real command, on
generated JPEGs in the ILSVRC folder layout: the runner trains each run once (the artifacts share runs through
the run cache), tests its last iterate with the artifact's protocol once, and the report renders the page.
"""

import json
import time

import pandas as pd
import pytest
import torch
from test_data_imagenet import WNIDS, write_jpegs

from resnet_repro.cli import main
from resnet_repro.data.imagenet import ImageNetConfig
from resnet_repro.experiment import plan_runs
from resnet_repro.runner import load_experiment
from resnet_repro.spec import run_id

SUBSET = ImageNetConfig(subset=len(WNIDS))  # the generated tree's classes: part of each run's identity


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: on two cores shared with other work, more threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Run fig4, table2, table3, table4 and table5 in that order into one runs directory; their outputs."""
    base = tmp_path_factory.mktemp("imagenet-smoke")
    # The smoke profile trains at 64x64 crops of images resized to [73, 137]: small images suffice, and decode fast.
    root = write_jpegs(base / "imagenet", sizes=((200, 150), (150, 200)))
    runs, results = base / "runs", base / "results"
    out, seconds = {}, {}
    for artifact in ("fig4", "table2", "table3", "table4", "table5"):
        argv = ["run", artifact, "--profile", "smoke", "--data", str(root), "--subset", str(len(WNIDS))]
        argv += ["--workers", "0", "--runs-dir", str(runs), "--results-dir", str(results)]
        argv += ["--wandb", "off", "--no-progress", "--accelerator", "cpu", "--threads", "1"]
        started = time.perf_counter()
        status = main(argv)
        seconds[artifact] = time.perf_counter() - started
        out[artifact] = status
    return {"root": root, "runs": runs, "results": results, "status": out, "seconds": seconds}


def test_every_imagenet_artifact_runs_end_to_end(smoke, capsys):
    assert smoke["status"] == dict.fromkeys(("fig4", "table2", "table3", "table4", "table5"), 0)
    results = smoke["results"]
    for name in ("fig4/fig4-smoke.png", "fig4/fig4-smoke.md", "table2/table2-smoke.md", "table3/table3-smoke.csv"):
        assert (results / name).is_file(), name
    for name in ("table4/table4-smoke.md", "table5/table5-smoke.md", "README.md"):
        assert (results / name).is_file(), name
    print("smoke wall times (s):", {k: round(v, 1) for k, v in smoke["seconds"].items()})


def test_table2_tests_fig4s_runs_with_ten_crops_and_reads_them_against_the_paper(smoke):
    table = pd.read_csv(smoke["results"] / "table2" / "table2-smoke.csv")
    assert list(table["method"]) == ["plain-18", "ResNet-18", "plain-34", "ResNet-34"]
    assert list(table["paper top-1"]) == [27.94, 27.88, 28.54, 25.03]
    assert table["ours top-1"].between(0, 100).all() and (table["seeds"] == 1).all()
    for spec in plan_runs(load_experiment("table2"), load_experiment("table2").profile("smoke"), SUBSET):
        record = json.loads((smoke["runs"] / run_id(spec) / "run.json").read_text())
        tested = record["evaluations"]["10crop"]
        assert tested["images"] == 2 * len(WNIDS)  # the whole generated val split
        assert record["evaluations"].keys() == {"10crop"}  # Fig. 4 itself tests nothing beyond its curves


def test_table3_has_every_row_and_marks_the_quoted_ones(smoke):
    table = pd.read_csv(smoke["results"] / "table3" / "table3-smoke.csv", keep_default_na=False)
    ours = table[table["note"] != "quoted from the paper"]
    assert list(ours["method"]) == [
        "plain-34",
        "ResNet-34 A",
        "ResNet-34 B",
        "ResNet-34 C",
        "ResNet-50",
        "ResNet-101",
        "ResNet-152",
    ]
    assert pd.to_numeric(ours["ours top-5"]).le(pd.to_numeric(ours["ours top-1"])).all()
    assert set(table.loc[table["note"] == "quoted from the paper", "method"]) == {
        "VGG-16 [41]",
        "GoogLeNet [44]",
        "PReLU-net [13]",
    }


def test_table4_uses_the_multiscale_test_of_table3s_runs(smoke):
    table = pd.read_csv(smoke["results"] / "table4" / "table4-smoke.csv", keep_default_na=False)
    ours = table[table["method"].isin(["ResNet-34 B", "ResNet-34 C", "ResNet-50", "ResNet-101", "ResNet-152"])]
    assert len(ours) == 5
    specs = plan_runs(load_experiment("table4"), load_experiment("table4").profile("smoke"), SUBSET)
    for spec, (_, row) in zip(specs, ours.iterrows(), strict=True):
        tested = json.loads((smoke["runs"] / run_id(spec) / "run.json").read_text())["evaluations"]
        assert float(row["ours top-1"]) == pytest.approx(tested["multiscale"]["top1_error"])
        assert float(row["ours top-5"]) == pytest.approx(tested["multiscale"]["top5_error"])
    spec = specs[0]
    record = json.loads((smoke["runs"] / run_id(spec) / "run.json").read_text())
    assert record["evaluations"].keys() == {"10crop", "multiscale"}  # trained once, tested for both tables
    assert (smoke["runs"] / run_id(spec) / "probabilities-multiscale.pt").is_file()
    page = (smoke["results"] / "table4" / "table4-smoke.md").read_text()
    assert "multiscale protocol" in page and "The Table 4 caption names no test protocol" in page


def test_table5_averages_the_members_and_says_the_paper_used_the_test_server(smoke):
    table = pd.read_csv(smoke["results"] / "table5" / "table5-smoke.csv")
    assert table["method"].iloc[-1] == "ensemble of 5 (ours)"
    assert (table["method"].str.endswith("(member)")).sum() == 5
    assert table.loc[table["method"] == "ResNet (ILSVRC'15)", "top-5 (%)"].item() == 3.57
    page = (smoke["results"] / "table5" / "table5-smoke.md").read_text()
    assert "test-server result" in page and "not directly comparable" in page


def test_table5_is_the_top5_error_of_the_averaged_probabilities(smoke):
    from resnet_repro.evaluation import top_k_errors
    from resnet_repro.testing import read_probabilities

    specs = plan_runs(load_experiment("table5"), load_experiment("table5").profile("smoke"), SUBSET)
    held = [read_probabilities(smoke["runs"] / run_id(s), "multiscale") for s in specs]
    average = sum(h["probabilities"].float() for h in held) / len(held)
    table = pd.read_csv(smoke["results"] / "table5" / "table5-smoke.csv")
    assert table["top-5 (%)"].iloc[-1] == pytest.approx(top_k_errors(average, held[0]["labels"])[5])


def test_table5_members_pick_the_ensemble(smoke, tmp_path):
    argv = ["report", "table5", "--profile", "smoke", "--runs-dir", str(smoke["runs"]), "--subset", str(len(WNIDS))]
    assert main([*argv, "--results-dir", str(tmp_path), "--members", "resnet50,resnet152"]) == 0
    table = pd.read_csv(tmp_path / "table5" / "table5-smoke.csv")
    assert table["method"].iloc[-1] == "ensemble of 2 (ours)"


def test_a_second_run_of_an_artifact_neither_trains_nor_tests_again(smoke, capsys):
    argv = ["run", "table2", "--profile", "smoke", "--data", str(smoke["root"]), "--subset", str(len(WNIDS))]
    argv += ["--workers", "0", "--runs-dir", str(smoke["runs"]), "--results-dir", str(smoke["results"])]
    assert main([*argv, "--wandb", "off", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 runs, 0 to train" in out and "testing the last iterate" not in out


def test_a_limited_or_stale_test_is_done_again(smoke, capsys):
    spec = plan_runs(load_experiment("table2"), load_experiment("table2").profile("smoke"), SUBSET)[0]
    path = smoke["runs"] / run_id(spec) / "run.json"
    record = json.loads(path.read_text())
    record["evaluations"]["10crop"]["limit"] = 2  # as `resnet-repro evaluate --limit 2` records it
    path.write_text(json.dumps(record))
    argv = ["run", "table2", "--profile", "smoke", "--data", str(smoke["root"]), "--subset", str(len(WNIDS))]
    argv += ["--workers", "0", "--runs-dir", str(smoke["runs"]), "--results-dir", str(smoke["results"])]
    assert main([*argv, "--wandb", "off", "--no-progress"]) == 0
    assert capsys.readouterr().out.count("testing the last iterate with the 10crop protocol") == 1
    assert json.loads(path.read_text())["evaluations"]["10crop"]["limit"] is None


def test_imagenet_table_means_over_the_tested_seeds_and_says_what_is_untested():
    from resnet_repro import paper, tables

    summary = pd.DataFrame(
        {
            "run_id": ["a", "b", "c"],
            "model": ["resnet34", "resnet34", "plain34"],
            "variant": ["A", "A", ""],
            "profile": ["paper"] * 3,
            "10crop_top1_error": [25.0, 27.0, float("nan")],
            "10crop_top5_error": [8.0, 9.0, float("nan")],
        }
    )
    table = tables.imagenet_table(summary, paper.TABLE3, "10crop").set_index("method")
    assert table.loc["ResNet-34 A", "ours top-1"] == 26.0 and table.loc["ResNet-34 A", "seeds"] == 2
    assert table.loc["ResNet-34 A", "ours − paper (top-1)"] == pytest.approx(26.0 - 25.03)
    assert (
        table.loc["plain-34", "seeds"] == 0
        and "1 trained run(s) not yet tested with 10crop" in table.loc["plain-34", "note"]
    )
    assert (
        table.loc["ResNet-50", "note"].endswith("not run")
        and table.loc["VGG-16 [41]", "note"] == "quoted from the paper"
    )


def test_run_list_gives_each_imagenet_runs_cost(capsys):
    assert main(["run", "table3", "--profile", "paper", "--list"]) == 0
    out = capsys.readouterr().out
    assert out.count("600000 iterations") == 7 and "PFLOP" in out
    assert main(["run", "--list", "--profile", "quick"]) == 0
    assert "fig4: no quick profile (imagenet profiles: paper, smoke)" in capsys.readouterr().out


def test_no_protocol_test_starts_after_a_stop(smoke, monkeypatch):
    # Ctrl-C, SIGTERM or --stop-after ended the training part: the command must stop, not begin hours of testing.
    from resnet_repro import runner, testing
    from resnet_repro.training import Hardware

    spec = plan_runs(load_experiment("table2"), load_experiment("table2").profile("smoke"), SUBSET)[0]
    path = smoke["runs"] / run_id(spec) / "run.json"
    record = json.loads(path.read_text())
    del record["evaluations"]["10crop"]
    path.write_text(json.dumps(record))  # a finished run, not yet tested
    monkeypatch.setattr(runner, "train_runs", lambda todo, options, jobs=1: [{"status": "interrupted", "run_id": "x"}])
    monkeypatch.setattr(testing, "evaluate_run", lambda *a, **k: pytest.fail("tested after a stop"))
    experiment = load_experiment("table2")
    records = runner.run_experiment(
        experiment,
        experiment.profile("smoke"),
        runs_dir=smoke["runs"],
        data=ImageNetConfig(str(smoke["root"]), subset=len(WNIDS), workers=0),
        hardware=Hardware("cpu"),
        progress=False,
    )
    assert records[0]["status"] == "interrupted" and "10crop" not in json.loads(path.read_text())["evaluations"]
