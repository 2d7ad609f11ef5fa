"""Paper-style error curves for Figs. 1 and 6 (Sec. 4.2): error (%) against iterations (1e4).

Pure functions of the long-format `curves` DataFrame from `resnet_repro.records`. Figures are built as
`matplotlib.figure.Figure` objects without pyplot, so no global figure state leaks between calls.
"""

import math
import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from resnet_repro.models import model_info

TRAIN = "train/error"
TEST = "test/error"
# Fig. 6: "dashed lines denote training error, and bold lines denote testing error".
TRAIN_STYLE = {"linestyle": "--", "linewidth": 0.9}
TEST_STYLE = {"linestyle": "-", "linewidth": 2.2}
THIN_TRAIN_STYLE = {"linestyle": "-", "linewidth": 0.7, "alpha": 0.8}  # Fig. 4: thin = training error
# Fig. 1 draws training and test error in separate panels, both as plain solid lines.
PANEL_STYLE = {"linestyle": "-", "linewidth": 1.4}

# One colour per depth in every panel and figure. As in the paper's figures: 20 layers olive,
# 56 red, 110 black (Figs. 1, 6, 7); Fig. 4 draws 18 layers cyan and 34 red.
DEPTH_COLOURS = {
    18: "#17becf",
    20: "#b5a300",
    32: "#17becf",
    34: "#d62728",
    44: "#2ca02c",
    56: "#d62728",
    110: "#000000",
    1202: "#1f77b4",
}
_FALLBACK_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#ff7f0e")

FOOTER_FONTSIZE = 7
PANEL_SIZE = (4.2, 3.0)  # inches per panel (width, height of the axes area)


def model_depth(model: str) -> int:
    """The depth of a registered model: "resnet110" -> 110 (UnknownModelError for other names)."""
    return model_info(model).depth


def model_label(model: str) -> str:
    """The paper's legend label: "plain20" -> "plain-20", "resnet56" -> "ResNet-56"."""
    info = model_info(model)
    return f"ResNet-{info.depth}" if info.residual else f"plain-{info.depth}"


def depth_colour(depth: int) -> str:
    """The colour of a depth, the same in every panel and every figure."""
    return DEPTH_COLOURS.get(depth, _FALLBACK_COLOURS[depth % len(_FALLBACK_COLOURS)])


def _runs_of(curves: pd.DataFrame, model: str, seed: int | None) -> pd.DataFrame:
    if len(curves) == 0:
        return curves
    rows = curves[curves["model"] == model]
    return rows if seed is None else rows[rows["seed"] == seed]


def missing_models(curves: pd.DataFrame, models, *, seed: int | None = None) -> list[str]:
    """The models (in the given order, without repeats) that have no rows in `curves` (for `seed`)."""
    return [m for m in dict.fromkeys(models) if len(_runs_of(curves, m, seed)) == 0]


def model_curve(curves: pd.DataFrame, model: str, metric: str, *, seed: int | None = None) -> pd.Series:
    """One model's `metric` by step: the mean over its seeds at each step, or the given seed's curve."""
    rows = _runs_of(curves, model, seed)
    if len(rows) == 0 or metric not in rows:
        return pd.Series(dtype=float)
    # Steps where the metric was not logged are NaN; drop them before averaging over seeds.
    return rows.dropna(subset=[metric]).groupby("step")[metric].mean().sort_index()


def off_scale_models(
    curves: pd.DataFrame, models, *, ymax: float = 20.0, metric: str = TEST, seed: int | None = None
) -> dict[str, float]:
    """Models whose final `metric` lies above `ymax`, with that final value (e.g. plain-110 above 60%)."""
    ends = {}
    for model in dict.fromkeys(models):
        curve = model_curve(curves, model, metric, seed=seed)
        if len(curve) and curve.iloc[-1] > ymax:
            ends[model] = float(curve.iloc[-1])
    return ends


def _seed_note(curves: pd.DataFrame, models, seed: int | None) -> str:
    if seed is not None:
        return f"curves: seed {seed}"
    seeds = {m: tuple(sorted({int(s) for s in _runs_of(curves, m, None)["seed"]})) for m in models}

    def describe(s):
        return f"seed {s[0]}" if len(s) == 1 else "mean over seeds " + ", ".join(map(str, s))

    if not seeds:
        return "curves: none"
    # Name the seed set most models share, then the exceptions (e.g. a single ResNet-1202 run).
    common = max(set(seeds.values()), key=list(seeds.values()).count)
    others = [f"{model_label(m)}: {describe(s)}" for m, s in seeds.items() if s != common]
    return f"curves: {describe(common)}" + (f" ({'; '.join(others)})" if others else "")


def _iteration_label(xscale: float) -> str:
    exponent = math.log10(xscale)
    if exponent == int(exponent):
        return f"iter. (1e{int(exponent)})"
    return f"iter. (×{xscale:g})"


def _new_figure(n_panels: int, footer: str, title: str | None = None, *, rows: int = 1, width_scale: float = 1.0):
    """A figure of `n_panels` axes side by side (or `rows` stacked) with `footer` wrapped under them."""
    columns = n_panels // rows
    width = PANEL_SIZE[0] * columns * width_scale
    chars_per_line = int(width * 72 / (FOOTER_FONTSIZE * 0.6))
    paragraphs = [textwrap.fill(p, chars_per_line, break_long_words=False) for p in footer.split("\n") if p]
    wrapped = "\n".join(paragraphs)
    footer_height = 0.14 * (wrapped.count("\n") + 1) + 0.1
    title_height, xlabel_height = (0.65 if title else 0.35), 0.55
    height = title_height + rows * (PANEL_SIZE[1] + xlabel_height) + footer_height
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    fig.subplots_adjust(
        left=0.6 / width,
        right=1 - 0.3 / width,  # room for the last tick label, at the right edge
        wspace=0.28,
        hspace=xlabel_height / PANEL_SIZE[1] * 1.1,
        top=1 - title_height / height,
        bottom=(xlabel_height + footer_height) / height,
    )
    fig.text(0.01, 0.05 / height, wrapped, fontsize=FOOTER_FONTSIZE, ha="left", va="bottom")
    if title:
        fig.suptitle(title, y=1 - 0.06 / height, va="top", fontsize=10)
    return fig, list(axes)


def _style_axes(ax, *, ylim, xscale: float, ylabel: str, xmax: float | None = None) -> None:
    ax.set_ylim(*ylim)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 5, 10]))  # 0, 5, 10, 15, 20 as in Fig. 6
    # The whole schedule on every panel, as in the paper: a run still training ends short of the right edge.
    ax.set_xlim(left=0, right=xmax / xscale if xmax else None)
    ax.set_xlabel(_iteration_label(xscale))
    ax.set_ylabel(ylabel)
    ax.grid(True, linestyle="--", linewidth=0.5, alpha=0.6)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center", va="center", color="grey")


def _footer_text(curves, models, missing, seed, footer, styles: str) -> str:
    drawn = [m for m in dict.fromkeys(models) if m not in missing]
    lines = [f"{styles}; {_seed_note(curves, drawn, seed)}"]
    if missing:
        lines.append("not in the records, not drawn: " + ", ".join(model_label(m) for m in missing))
    lines.append(footer)
    return "\n".join(lines)


def plot_error_curves(
    curves: pd.DataFrame,
    panels,
    *,
    footer: str,
    ylim=(0, 20),
    xscale: float = 1e4,
    seed: int | None = None,
    labels: dict[str, str] | None = None,
    title: str | None = None,
    thin_train: bool = False,
    xmax: float | None = None,
) -> Figure:
    """Fig. 6 style: one panel per (title, [models]); dashed = training error, bold = test error
    (`thin_train`: Fig. 4's style, thin solid training curves, bold centre-crop validation curves).

    Args:
        panels: e.g. [("plain", ["plain20", "plain56"]), ("ResNet", ["resnet20", "resnet56"])].
        footer: the provenance line (`tables.provenance_footer`), printed under the figure.
        seed: None plots each model's mean over its seeds; an int plots that seed only.
        labels: legend labels that replace `model_label`, e.g. {"resnet1202": "residual-1202"}.
        xmax: the schedule's last iteration, the right edge of every panel (None: the data's extent).
    """
    models = [m for _, panel_models in panels for m in panel_models]
    missing = missing_models(curves, models, seed=seed)
    legend = (
        "thin = training error, bold = validation error (centre crop)"
        if thin_train
        else "dashed = training error, bold = test error"
    )
    train_style = THIN_TRAIN_STYLE if thin_train else TRAIN_STYLE
    text = _footer_text(curves, models, missing, seed, footer, legend)
    fig, axes = _new_figure(len(panels), text, title)
    for ax, (title, panel_models) in zip(axes, panels, strict=True):
        for model in panel_models:
            if model in missing:
                continue
            colour = depth_colour(model_depth(model))
            label = (labels or {}).get(model, model_label(model))
            train = model_curve(curves, model, TRAIN, seed=seed)
            test = model_curve(curves, model, TEST, seed=seed)
            ax.plot(
                train.index / xscale, train.to_numpy(), color=colour, **train_style, label=None if len(test) else label
            )
            ax.plot(test.index / xscale, test.to_numpy(), color=colour, **TEST_STYLE, label=label)
        ax.set_title(title)
        _style_axes(ax, ylim=ylim, xscale=xscale, ylabel="error (%)", xmax=xmax)
    return fig


def plot_train_test_panels(
    curves: pd.DataFrame,
    models,
    *,
    footer: str,
    ylim=(0, 20),
    xscale: float = 1e4,
    seed: int | None = None,
    labels: dict[str, str] | None = None,
    title: str | None = None,
    xmax: float | None = None,
) -> Figure:
    """Fig. 1 style: training error (left) and test error (right) of `models`, labelled "20-layer" etc.;
    `xmax` as in `plot_error_curves`."""
    missing = missing_models(curves, models, seed=seed)
    text = _footer_text(curves, models, missing, seed, footer, "left: training error, right: test error")
    fig, (left, right) = _new_figure(2, text, title)
    # Fig. 1 labels by depth alone ("20-layer"); that is ambiguous once plain and residual nets mix.
    one_kind = len({model_info(m).residual for m in models}) == 1
    for model in dict.fromkeys(models):
        if model in missing:
            continue
        colour = depth_colour(model_depth(model))
        default = f"{model_depth(model)}-layer" if one_kind else model_label(model)
        label = (labels or {}).get(model, default)
        for ax, metric in ((left, TRAIN), (right, TEST)):
            curve = model_curve(curves, model, metric, seed=seed)
            ax.plot(curve.index / xscale, curve.to_numpy(), color=colour, **PANEL_STYLE, label=label)
    _style_axes(left, ylim=ylim, xscale=xscale, ylabel="training error (%)", xmax=xmax)
    _style_axes(right, ylim=ylim, xscale=xscale, ylabel="test error (%)", xmax=xmax)
    return fig


# Fig. 7: "plain-20 (dashed olive), plain-56 (dashed red), ResNet-20 (solid olive), ResNet-56 (solid red),
# ResNet-110 (solid black)".
RESPONSE_STYLE = {False: {"linestyle": "--", "linewidth": 1.2}, True: {"linestyle": "-", "linewidth": 1.4}}


def plot_layer_responses(responses: pd.DataFrame, models, *, footer: str, title: str | None = None) -> Figure:
    """Fig. 7 style: std of each 3x3 layer's response, top in the original layer order, bottom sorted
    in descending order; plain nets dashed, ResNets solid, one colour per depth (mean over seeds)."""
    missing = [m for m in dict.fromkeys(models) if not (responses["model"] == m).any()]
    lines = ["top: original layer order; bottom: sorted by magnitude; dashed = plain, solid = ResNet"]
    if missing:
        lines.append("no layer responses in the records, not drawn: " + ", ".join(model_label(m) for m in missing))
    fig, (top, bottom) = _new_figure(2, "\n".join([*lines, footer]), title, rows=2, width_scale=2.0)
    for model in dict.fromkeys(models):
        if model in missing:
            continue
        per_layer = responses[responses["model"] == model].groupby("layer_index")["std"].mean().sort_index()
        style = {"color": depth_colour(model_depth(model)), **RESPONSE_STYLE[model_info(model).residual]}
        top.plot(per_layer.index, per_layer.to_numpy(), label=model_label(model), **style)
        ordered = per_layer.sort_values(ascending=False).to_numpy()
        bottom.plot(range(1, len(ordered) + 1), ordered, label=model_label(model), **style)
    for ax, xlabel in ((top, "layer index (original)"), (bottom, "layer index (sorted by magnitude)")):
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("std")
        ax.grid(True, linestyle="--", linewidth=0.5, alpha=0.6)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
    return fig


VARIANT_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def plot_variant_curves(
    curves: pd.DataFrame,
    panels,
    *,
    footer: str,
    ylim,
    xscale: float,
    title: str | None = None,
    xmax: float | None = None,
):
    """An ablation's curves: one panel per net, one colour per variant; dashed = training, bold = test;
    `xmax` as in `plot_error_curves`.

    Args:
        panels: [(title, [(variant label, [run ids]), ...]), ...]; several run ids are averaged per step.
    """
    fig, axes = _new_figure(len(panels), f"dashed = training error, bold = test error\n{footer}", title)
    for ax, (panel_title, variants) in zip(axes, panels, strict=True):
        for colour, (label, run_ids) in zip(VARIANT_COLOURS, variants, strict=False):
            rows = curves[curves["run_id"].isin(run_ids)]
            for metric, style in ((TRAIN, TRAIN_STYLE), (TEST, TEST_STYLE)):
                curve = rows.dropna(subset=[metric]).groupby("step")[metric].mean().sort_index()
                ax.plot(
                    curve.index / xscale,
                    curve.to_numpy(),
                    color=colour,
                    **style,
                    label=label if metric == TEST else None,
                )
        ax.set_title(panel_title)
        _style_axes(ax, ylim=ylim, xscale=xscale, ylabel="error (%)", xmax=xmax)
    return fig


def save_figure(fig: Figure, path_without_suffix) -> list[Path]:
    """Write `fig` as PNG (150 dpi) and PDF next to each other; return both paths."""
    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    png = base.parent / f"{base.name}.png"
    pdf = base.parent / f"{base.name}.pdf"
    fig.savefig(png, dpi=150)
    # No creation date in the PDF, so regenerating an unchanged figure gives an identical file.
    fig.savefig(pdf, metadata={"CreationDate": None})
    return [png, pdf]
