"""Table 6, the plain-vs-residual table, markdown and provenance, from synthetic run summaries."""

import math

import pandas as pd
import pytest

from resnet_repro import tables


def run(model, seed, test_error, *, train_error=1.0, profile="quick", shortcut="A", wall_time_s=100.0):
    depth = int(model.removeprefix("plain").removeprefix("resnet"))
    n = (depth - 2) // 6
    return {
        "run_id": f"{model}-s{seed}",
        "model": model,
        "family": "cifar",
        "depth": depth,
        "residual": model.startswith("resnet"),
        "shortcut": shortcut,
        "seed": seed,
        "params": cifar_params(n),
        "profile": profile,
        "max_iters": 4000,
        "final_train_error": train_error,
        "final_test_error": test_error,
        "final_test_loss": 0.3,
        "wall_time_s": wall_time_s,
        "data_copy": "cifar10-jpg q75 sha256:fdf0b4f6",
        "commit": "abc1234",
        "hardware": "CPU: 2 cores (x86_64)",
        "warmup_end_iter": math.nan,
    }


def cifar_params(n):
    """Parameters of the 6n+2 option-A net (Sec. 4.2): 3x3 convs without bias, BN scale+shift, fc."""
    widths = (16, 32, 64)
    total = 3 * 16 * 9 + 2 * 16  # first conv + BN
    previous = 16
    for width in widths:
        for _ in range(2 * n):
            total += previous * width * 9 + 2 * width
            previous = width
    return total + 64 * 10 + 10


def summary_of(*runs):
    return pd.DataFrame(list(runs))


RESNET110 = [6.5, 6.7, 6.9, 6.6, 6.8]


def test_format_params_gives_table6_strings_for_6n_plus_2_nets():
    assert cifar_params(3) == 269_722
    strings = [tables.format_params(cifar_params(n)) for n in (3, 5, 7, 9, 18, 200)]
    assert strings == ["0.27M", "0.46M", "0.66M", "0.85M", "1.7M", "19.4M"]


def test_table6_best_mean_std_over_seeds():
    summary = summary_of(*(run("resnet110", s, e) for s, e in enumerate(RESNET110)))
    row = tables.table6(summary).set_index(["method", "# layers"]).loc[("ResNet", "110")]
    assert row["ours best"] == 6.5
    assert row["ours mean"] == pytest.approx(6.7)
    assert row["ours std"] == pytest.approx(math.sqrt(0.1 / 4))  # ddof=1
    assert row["seeds"] == 5
    assert row["# params (ours)"] == "1.7M"


def test_table6_paper_column_exact_and_in_order():
    table = tables.table6(summary_of(run("resnet20", 0, 9.0)))
    assert list(table["paper error (%)"]) == [
        "9.38",
        "8.81",
        "8.22",
        "8.39",
        "7.54 (7.72±0.16)",
        "8.80",
        "8.75",
        "7.51",
        "7.17",
        "6.97",
        "6.43 (6.61±0.16)",
        "7.93",
    ]
    assert list(table["# params"][6:]) == ["0.27M", "0.46M", "0.66M", "0.85M", "1.7M", "19.4M"]


def test_table6_difference_against_paper_mean_or_single_number():
    summary = summary_of(
        run("resnet20", 0, 9.0),
        run("resnet20", 1, 8.0),
        *(run("resnet110", s, e) for s, e in enumerate(RESNET110)),
    )
    diff = tables.table6(summary).set_index("# layers")["ours mean − paper"]
    assert diff["20"] == pytest.approx(8.5 - 8.75)  # below the paper: negative
    assert diff["110"] == pytest.approx(6.7 - 6.61)  # against the paper's mean of 5 runs, not its best
    assert diff["110"] > 0


def test_table6_marks_depths_not_run_and_quotes_other_methods():
    table = tables.table6(summary_of(run("resnet56", 0, 7.0)))
    notes = table.set_index(["method", "# layers"])["note"]
    assert notes[("ResNet", "1202")] == "not run"
    assert notes[("ResNet", "56")] == ""
    assert notes[("Maxout [10]", "–")] == "quoted from the paper"
    assert math.isnan(table.set_index("# layers").loc["1202", "ours mean"])


def test_table6_single_run_has_no_std():
    row = tables.table6(summary_of(run("resnet32", 0, 7.8))).set_index(["method", "# layers"]).loc[("ResNet", "32")]
    assert row["ours best"] == row["ours mean"] == 7.8
    assert math.isnan(row["ours std"])


def test_table6_ignores_plain_and_non_option_a_runs():
    summary = summary_of(run("resnet20", 0, 9.0), run("resnet20", 1, 5.0, shortcut="B"), run("plain20", 0, 12.0))
    row = tables.table6(summary).set_index("# layers").loc["20"]
    assert (row["ours mean"], row["seeds"]) == (9.0, 1)


def test_table6_refuses_mixed_profiles():
    with pytest.raises(ValueError, match="mixes profiles"):
        tables.table6(summary_of(run("resnet20", 0, 9.0), run("resnet20", 1, 8.0, profile="paper")))


def test_depth_comparison_means_over_seeds():
    summary = summary_of(
        run("plain20", 0, 30.0, train_error=31.0),
        run("plain20", 1, 32.0, train_error=33.0),
        run("resnet20", 0, 26.0, train_error=27.0),
        run("plain56", 0, 66.0, train_error=68.0),
    )
    table = tables.depth_comparison(summary).set_index("depth")
    assert list(table.index) == [20, 56]
    assert table.loc[20, "plain train error"] == 32.0
    assert table.loc[20, "plain test error"] == 31.0
    assert (table.loc[20, "plain seeds"], table.loc[20, "ResNet seeds"]) == (2, 1)
    assert table.loc[20, "ResNet test error"] == 26.0
    assert math.isnan(table.loc[56, "ResNet test error"])


def test_render_markdown_header_rows_and_footer():
    df = pd.DataFrame({"method": ["a|b", "c"], "error": [6.4321, math.nan], "seeds": [5, 0]})
    text = tables.render_markdown(df, title="T", footer="made here")
    lines = text.splitlines()
    assert lines[0] == "## T"
    assert lines[2] == "| method | error | seeds |"
    assert lines[3] == "|---|---:|---:|"
    assert lines[4] == "| a\\|b | 6.43 | 5 |"
    assert lines[5] == "| c |  | 0 |"
    assert lines[-1] == "made here"


def test_provenance_footer_names_everything():
    summary = summary_of(run("resnet20", 10, 9.0), run("resnet20", 2, 8.0), run("plain20", 0, 12.0))
    text = tables.provenance_footer(summary, profile="quick")
    for part in (
        "profile: quick (max_iters 4000)",
        "scaled-down",
        "seeds: 0, 2, 10 (3 runs)",
        "data: cifar10-jpg q75 sha256:fdf0b4f6",
        "hardware: CPU: 2 cores (x86_64)",
        "commit: abc1234",
        "wall time: 5.0 min (sum over 3 runs)",
    ):
        assert part in text
    resumed = summary.assign(commit=["abc1234 + def5678", "abc1234", "abc1234"])  # one run trained in two parts
    assert "commit: abc1234, def5678;" in tables.provenance_footer(resumed, profile="quick")


def test_provenance_footer_paper_profile_and_given_wall_time():
    summary = summary_of(run("resnet20", 0, 9.0, profile="paper"))
    text = tables.provenance_footer(summary, profile="paper", wall_time_s=3 * 3600)
    assert "scaled-down" not in text
    assert text.endswith("wall time: 3.0 h")
    with pytest.raises(ValueError):
        tables.provenance_footer(summary, profile="quick")


def test_table6_markdown_rows_hold_ours_beside_the_paper():
    text = tables.render_markdown(tables.table6(summary_of(run("resnet20", 0, 9.0))), title="T6", footer="f")
    assert "| ResNet | 20 | 0.27M | 8.75 | 0.27M | 9.00 | 9.00 |  | 1 |  |  | 0.25 |  |" in text
    assert "ddof=1" in tables.TABLE6_NOTE and "bootstrap 95% interval" in tables.TABLE6_NOTE


def test_bootstrap_interval_covers_the_mean_and_needs_three_seeds():
    assert all(math.isnan(v) for v in tables.bootstrap_interval([6.5, 6.7]))
    low, high = tables.bootstrap_interval([6.43, 6.61, 6.8, 6.55, 6.7])
    assert low < 6.618 < high and high - low < 0.5
    assert tables.bootstrap_interval([6.43, 6.61, 6.8, 6.55, 6.7]) == (low, high)  # seeded: pages rebuild equal
    assert tables.bootstrap_interval([7.0, 7.0, 7.0]) == (7.0, 7.0)


def test_table6_says_whether_the_paper_lies_in_our_interval():
    # Five ResNet-110 seeds around 6.6 hold the paper's mean 6.61; five around 7.5 do not.
    near = summary_of(*[run("resnet110", s, e) for s, e in enumerate([6.4, 6.5, 6.6, 6.7, 6.8])])
    far = summary_of(*[run("resnet110", s, e) for s, e in enumerate([7.4, 7.5, 7.5, 7.6, 7.7])])
    for summary, verdict in ((near, "yes"), (far, "no")):
        row = tables.table6(summary).set_index("# layers").loc["110"]
        assert row["paper in CI"] == verdict and "–" in row["ours mean 95% CI"] and row["seeds"] == 5
    single = tables.table6(summary_of(run("resnet20", 0, 9.0))).set_index("# layers").loc["20"]
    assert single["ours mean 95% CI"] == "" and single["paper in CI"] == ""


def test_table6_tolerates_records_without_params_or_wall_time():
    record = run("resnet20", 0, 9.0)
    record.update(params=None, wall_time_s=None)
    summary = summary_of(record)
    assert tables.table6(summary).set_index("# layers").loc["20", "# params (ours)"] == ""
    assert "wall time: 0 s" in tables.provenance_footer(summary, profile="quick")


def test_response_table_gives_per_net_medians_in_the_given_order():
    responses = pd.DataFrame(
        [
            {"run_id": f"{m}-s0", "model": m, "seed": 0, "layer_index": i, "layer": f"l{i}", "std": s}
            for m, values in {"resnet20": [3.0, 1.0, 2.0], "plain20": [3.0, 2.0, 2.5, 2.2]}.items()
            for i, s in enumerate(values, start=1)
        ]
    )
    table = tables.response_table(responses, ["plain20", "resnet20", "resnet56"])
    assert table["net"].tolist() == ["plain20", "resnet20"]  # a net without records is left out
    row = table.set_index("net").loc["plain20"]
    assert row["layers"] == 4 and row["median std"] == pytest.approx(2.35) and row["first layer std"] == 3.0
    assert row["max std"] == 3.0 and row["min std"] == 2.0


def test_ablation_table_reports_each_arm_and_when_training_started_converging():
    summary = summary_of(run("resnet110", 0, 8.0), run("resnet110", 0, 9.0))
    summary["run_id"] = ["warm", "cold"]
    summary["variant"] = ["0.01 warm-up", "0.1 from the start"]
    summary["final_test_top5_error"] = [1.0, 2.0]
    steps = [10, 20, 30, 40, 50]
    curves = pd.DataFrame(
        [{"run_id": "warm", "step": s, "train/error": e} for s, e in zip(steps, [95, 85, 75, 60, 50], strict=True)]
        # At chance the running error dips below 90% at iteration 10 and back: it converges only from 40.
        + [{"run_id": "cold", "step": s, "train/error": e} for s, e in zip(steps, [88, 91, 90.5, 89, 85], strict=True)]
    )
    table = tables.ablation_table(summary, curves, ["0.01 warm-up", "0.1 from the start"]).set_index("variant")
    assert table.loc["0.01 warm-up", "train < 90% from iter."] == 20
    assert table.loc["0.01 warm-up", "train < 80% from iter."] == 30
    assert table.loc["0.1 from the start", "train < 90% from iter."] == 40
    assert pd.isna(table.loc["0.1 from the start", "train < 80% from iter."])
    assert table.loc["0.1 from the start", "test error mean"] == 9.0
