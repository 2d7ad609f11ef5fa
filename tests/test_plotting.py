"""Paper-style error curves (Figs. 1 and 6) rendered from synthetic curve records."""

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from resnet_repro import plotting
from resnet_repro.errors import UnknownModelError

FOOTER = "profile: smoke (max_iters 64000); data: cifar10-jpg q75 sha256:fdf0b4f6; commit: abc1234"
FIG6 = [
    ("plain", ["plain20", "plain56"]),
    ("ResNet", ["resnet20", "resnet56", "resnet110"]),
    ("ResNet-110 vs 1202", ["resnet110", "resnet1202"]),
]


def curves_of(models, seeds=(0, 1), *, end_test=None, max_iters=64_000, log_every=1000, eval_every=4000):
    """Long-format curves: training error every `log_every` steps, test error every `eval_every`."""
    rows = []
    for model in models:
        for seed in seeds:
            for step in range(log_every, max_iters + 1, log_every):
                decay = math.exp(-step / 10_000)
                test = (end_test or {}).get(model, 8.0) + 50 * decay + seed
                rows.append(
                    {
                        "run_id": f"{model}-s{seed}",
                        "model": model,
                        "seed": seed,
                        "step": step,
                        "train/error": 1.0 + 50 * decay + seed,
                        "train/loss": 0.1,
                        "test/error": test if step % eval_every == 0 else math.nan,
                        "test/loss": math.nan,
                        "lr": 0.1,
                        "throughput": 900.0,
                    }
                )
    return pd.DataFrame(rows)


ALL = ["plain20", "plain56", "resnet20", "resnet56", "resnet110", "resnet1202"]


def footer_text(fig):
    return " ".join(t.get_text() for t in fig.texts).replace("\n", " ")


def test_plot_error_curves_axes_in_paper_units():
    fig = plotting.plot_error_curves(curves_of(ALL), FIG6, footer=FOOTER)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert ax.get_ylim() == (0, 20)
        assert ax.get_xlabel() == "iter. (1e4)"
        assert ax.get_ylabel() == "error (%)"
        assert max(line.get_xdata().max() for line in ax.lines) == pytest.approx(6.4)
    assert [ax.get_title() for ax in fig.axes] == ["plain", "ResNet", "ResNet-110 vs 1202"]


def test_a_run_still_training_ends_short_of_the_schedule_on_every_panel():
    curves = pd.concat([curves_of(["resnet20"]), curves_of(["plain20"], max_iters=20_000)])
    fig = plotting.plot_error_curves(curves, FIG6[:2], footer=FOOTER, xmax=64_000)
    plain, resnet = fig.axes
    assert plain.get_xlim() == resnet.get_xlim() == (0, 6.4)  # the whole schedule, not the data's extent
    assert max(line.get_xdata().max() for line in plain.lines) == pytest.approx(2.0)
    fig1 = plotting.plot_train_test_panels(curves, ["plain20"], footer=FOOTER, xmax=64_000)
    assert [ax.get_xlim() for ax in fig1.axes] == [(0, 6.4)] * 2
    without = plotting.plot_error_curves(curves, FIG6[:1], footer=FOOTER)
    assert without.axes[0].get_xlim()[1] < 2.5  # no schedule given: the data's extent


def test_plot_error_curves_dashed_train_bold_test():
    fig = plotting.plot_error_curves(curves_of(ALL), FIG6, footer=FOOTER)
    for ax, (_, models) in zip(fig.axes, FIG6, strict=True):
        assert len(ax.lines) == 2 * len(models)
        train, test = ax.lines[0::2], ax.lines[1::2]
        assert {line.get_linestyle() for line in train} == {"--"}
        assert {line.get_linestyle() for line in test} == {"-"}
        assert min(line.get_linewidth() for line in test) > max(line.get_linewidth() for line in train)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [plotting.model_label(m) for m in models]


def test_plot_error_curves_fig4_style_thin_train_bold_validation():
    fig = plotting.plot_error_curves(curves_of(ALL), FIG6, footer=FOOTER, thin_train=True)
    for ax in fig.axes[: len(FIG6)]:
        train, test = ax.lines[0::2], ax.lines[1::2]
        assert {line.get_linestyle() for line in train} == {"-"} == {line.get_linestyle() for line in test}
        assert min(line.get_linewidth() for line in test) > 2 * max(line.get_linewidth() for line in train)
    assert "thin = training error, bold = validation error (centre crop)" in fig.texts[-1].get_text()


def test_plot_error_curves_one_colour_per_depth_across_panels():
    fig = plotting.plot_error_curves(curves_of(ALL), FIG6, footer=FOOTER)
    colours = {}
    for ax in fig.axes:
        for line in ax.lines[1::2]:
            depth = int(line.get_label().split("-")[1])
            colours.setdefault(depth, set()).add(line.get_color())
    assert all(len(c) == 1 for c in colours.values())  # plain-20 and ResNet-20 share, 110 twice
    assert len({next(iter(c)) for c in colours.values()}) == len(colours) == 4


def test_plot_error_curves_plots_mean_over_seeds_and_says_so():
    curves = curves_of(["resnet20"], seeds=(0, 1, 2))
    fig = plotting.plot_error_curves(curves, [("ResNet", ["resnet20"])], footer=FOOTER)
    train_line = fig.axes[0].lines[0]
    expected = curves[curves.step == 1000]["train/error"].mean()
    assert train_line.get_ydata()[0] == pytest.approx(expected)
    assert "curves: mean over seeds 0, 1, 2" in footer_text(fig)
    test_line = fig.axes[0].lines[1]
    assert len(test_line.get_xdata()) == 16  # only the steps where test error was logged


def test_plot_error_curves_single_seed_on_request():
    curves = curves_of(["resnet20"], seeds=(0, 1))
    fig = plotting.plot_error_curves(curves, [("ResNet", ["resnet20"])], footer=FOOTER, seed=1)
    expected = curves[(curves.step == 1000) & (curves.seed == 1)]["train/error"].iloc[0]
    assert fig.axes[0].lines[0].get_ydata()[0] == pytest.approx(expected)
    assert "curves: seed 1" in footer_text(fig)


def test_plot_error_curves_skips_and_lists_missing_models():
    curves = curves_of(["plain20", "resnet20"])
    fig = plotting.plot_error_curves(curves, FIG6, footer=FOOTER)
    assert [len(ax.lines) for ax in fig.axes] == [2, 2, 0]
    text = footer_text(fig)
    assert "not drawn: plain-56, ResNet-56, ResNet-110, ResNet-1202" in text
    assert fig.axes[2].texts[0].get_text() == "no runs"


def test_plot_error_curves_footer_carries_provenance():
    fig = plotting.plot_error_curves(curves_of(ALL), FIG6, footer=FOOTER)
    text = footer_text(fig)
    assert "dashed = training error, bold = test error" in text
    assert "sha256:fdf0b4f6" in text and "commit: abc1234" in text


def test_plot_error_curves_custom_scale_and_labels():
    curves = curves_of(["resnet1202"], max_iters=4000, log_every=100, eval_every=400)
    fig = plotting.plot_error_curves(
        curves,
        [("right", ["resnet1202"])],
        footer=FOOTER,
        ylim=(0, 60),
        xscale=1e3,
        labels={"resnet1202": "residual-1202"},
    )
    ax = fig.axes[0]
    assert ax.get_xlabel() == "iter. (1e3)" and ax.get_ylim() == (0, 60)
    assert ax.lines[0].get_xdata().max() == pytest.approx(4.0)
    assert ax.get_legend().get_texts()[0].get_text() == "residual-1202"


def test_off_scale_models_reports_final_error_above_ylim():
    curves = curves_of(["plain20", "plain110"], end_test={"plain110": 65.0}, seeds=(0,))
    assert plotting.off_scale_models(curves, ["plain20", "plain110", "plain56"], ymax=20) == {
        "plain110": pytest.approx(65.0 + 50 * math.exp(-6.4))
    }


def test_plot_train_test_panels_fig1_layout():
    fig = plotting.plot_train_test_panels(curves_of(["plain20", "plain56"]), ["plain20", "plain56"], footer=FOOTER)
    left, right = fig.axes
    assert (left.get_ylabel(), right.get_ylabel()) == ("training error (%)", "test error (%)")
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["20-layer", "56-layer"]
    assert len(left.lines) == len(right.lines) == 2
    assert [line.get_color() for line in left.lines] == [line.get_color() for line in right.lines]
    assert left.get_ylim() == right.get_ylim() == (0, 20)
    assert "left: training error, right: test error" in footer_text(fig)


def test_plot_train_test_panels_mixed_kinds_use_model_labels():
    fig = plotting.plot_train_test_panels(curves_of(["plain20", "resnet20"]), ["plain20", "resnet20"], footer=FOOTER)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["plain-20", "ResNet-20"]


def test_plotting_leaves_pyplot_state_alone():
    before = plt.get_fignums()
    plotting.plot_error_curves(curves_of(["resnet20"]), [("ResNet", ["resnet20"])], footer=FOOTER)
    plotting.plot_train_test_panels(curves_of(["plain20"]), ["plain20"], footer=FOOTER)
    assert plt.get_fignums() == before


def test_save_figure_writes_png_and_pdf(tmp_path):
    fig = plotting.plot_error_curves(curves_of(["resnet20"]), [("ResNet", ["resnet20"])], footer=FOOTER)
    png, pdf = plotting.save_figure(fig, tmp_path / "fig6" / "fig6.quick")
    assert (png.name, pdf.name) == ("fig6.quick.png", "fig6.quick.pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert png.stat().st_size > 10_000 and pdf.stat().st_size > 1_000


def test_model_depth_and_label():
    assert plotting.model_depth("resnet1202") == 1202
    assert plotting.model_label("plain56") == "plain-56"
    assert plotting.model_label("resnet110") == "ResNet-110"
    with pytest.raises(UnknownModelError, match="resnet"):
        plotting.model_depth("resnet")


def responses_of(stds: dict[str, list[float]]) -> pd.DataFrame:
    """Fig. 7 records: one row per (net, layer) with the given stds in forward order."""
    return pd.DataFrame(
        [
            {"run_id": f"{m}-s0", "model": m, "seed": 0, "layer_index": i, "layer": f"l{i}", "std": s}
            for m, values in stds.items()
            for i, s in enumerate(values, start=1)
        ]
    )


def test_plot_layer_responses_draws_original_order_on_top_and_sorted_below():
    responses = responses_of({"plain20": [3.0, 1.5, 2.5], "resnet20": [3.2, 0.8, 1.1, 0.9]})
    fig = plotting.plot_layer_responses(responses, ["plain20", "resnet20", "resnet110"], footer=FOOTER)
    top, bottom = fig.axes
    lines = {line.get_label(): line for line in top.get_lines()}
    assert list(lines["plain-20"].get_ydata()) == [3.0, 1.5, 2.5]
    assert lines["plain-20"].get_linestyle() == "--" and lines["ResNet-20"].get_linestyle() == "-"  # as in Fig. 7
    sorted_lines = {line.get_label(): line for line in bottom.get_lines()}
    assert list(sorted_lines["ResNet-20"].get_ydata()) == [3.2, 1.1, 0.9, 0.8]
    assert lines["plain-20"].get_color() == lines["ResNet-20"].get_color()  # one colour per depth
    assert "not drawn: ResNet-110" in footer_text(fig)
    plt.close("all")
