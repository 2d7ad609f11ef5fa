"""Table 6 (CIFAR-10 test error, Sec. 4.2) and plain-vs-residual tables from run records, as markdown.

Pure functions of the `summary` DataFrame from `resnet_repro.records` (one row per finished run). Only
each run's last-iterate `final_test_error` is used, never the best point of a curve: the paper reports
the final model, and picking the best test point would select on the test set.
"""

import math
import numbers
import re

import numpy as np
import pandas as pd

from resnet_repro.paper import TABLE6
from resnet_repro.records import PART_SEPARATOR

# Sample standard deviation (n-1), as pandas and MATLAB compute it by default. The paper reports
# "best (mean±std) as in [43]" without saying which; with 5 runs the two differ by a factor 1.12.
STD_DDOF = 1

# Bootstrap of the mean over seeds: resampled with replacement, a fixed generator so pages rebuild identically.
BOOTSTRAP_RESAMPLES = 10_000
MIN_SEEDS_FOR_INTERVAL = 3  # fewer seeds give no meaningful interval


def bootstrap_interval(values, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`; (nan, nan) with fewer than 3 values."""
    values = np.asarray([v for v in values if not pd.isna(v)], dtype=float)
    if len(values) < MIN_SEEDS_FOR_INTERVAL:
        return (math.nan, math.nan)
    rng = np.random.default_rng(0)
    means = rng.choice(values, size=(resamples, len(values)), replace=True).mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (float(low), float(high))


def seed_statistics(values) -> dict:
    """Best (min), mean, std (ddof=1) and the bootstrap 95% interval of the mean over seeds."""
    values = pd.Series(values, dtype=float).dropna()
    low, high = bootstrap_interval(values)
    return {
        "best": values.min() if len(values) else math.nan,
        "mean": values.mean() if len(values) else math.nan,
        "std": values.std(ddof=STD_DDOF) if len(values) > STD_DDOF else math.nan,
        "ci_low": low,
        "ci_high": high,
        "seeds": len(values),
    }


def format_interval(low: float, high: float) -> str:
    return "" if math.isnan(low) else f"{low:.2f}–{high:.2f}"


def inside(value: float | None, low: float, high: float) -> str:
    """'yes' / 'no' when there is an interval and a paper number, else ''."""
    if value is None or math.isnan(low):
        return ""
    return "yes" if low <= value <= high else "no"


TABLE6_NOTE = (
    "ours: the last-iterate test error of each run (never the best point of a curve); best = min over "
    f"seeds, std with ddof={STD_DDOF}. ours mean − paper compares with the paper's mean where it gives "
    "one (ResNet-110, 5 runs), else with its single number. With 3 or more seeds: a bootstrap 95% interval "
    f"of our mean ({BOOTSTRAP_RESAMPLES:,} resamples of the seeds) and whether the paper's number lies inside "
    "it. Other methods are quoted from the paper."
)


def format_params(count: int) -> str:
    """A parameter count as Table 6 prints it: 0.27M below a million, 1.7M and 19.4M above."""
    millions = count / 1e6
    return f"{millions:.2f}M" if millions < 1 else f"{millions:.1f}M"


def format_duration(seconds: float) -> str:
    """Seconds as the tables and the CLI print them: "95 s", "31.3 min", "2.7 h"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _joined(values) -> str:
    """The distinct values of a column, once each; a run's "a + b" (its parts' commits) counts as a and b."""
    unique = sorted({one for v in values if not pd.isna(v) for one in str(v).split(PART_SEPARATOR)})
    return ", ".join(unique) if unique else "unknown"


def _check_one_profile(summary: pd.DataFrame, profile: str | None = None) -> None:
    """Refuse to pool runs of different profiles: a quick run's error is not a paper run's error."""
    found = set(summary["profile"]) if len(summary) else set()
    expected = {profile} if profile is not None else set(list(found)[:1])
    if found - expected:
        raise ValueError(f"summary mixes profiles {sorted(found)}; filter it to one profile first")


def provenance_footer(summary: pd.DataFrame, *, profile: str, wall_time_s: float | None = None) -> str:
    """One line saying where the numbers come from: profile, seeds, data copy, hardware, commit, wall time.

    Figures and tables both use this text, so no artifact can leave out its provenance. Without
    `wall_time_s`, the wall time is the sum of the runs' training times.
    """
    _check_one_profile(summary, profile)
    iters = _joined(summary["max_iters"]) if len(summary) else "unknown"
    head = f"profile: {profile} (max_iters {iters})"
    if profile != "paper":
        head += " - a scaled-down protocol, not the paper's schedule: compare trends, not digits"
    seeds = ", ".join(str(s) for s in sorted({int(s) for s in summary["seed"]})) if len(summary) else "none"
    if wall_time_s is None:
        total = float(pd.to_numeric(summary["wall_time_s"]).sum()) if len(summary) else 0.0
        wall = f"wall time: {format_duration(total)} (sum over {len(summary)} runs)"
    else:
        wall = f"wall time: {format_duration(wall_time_s)}"
    parts = [
        head,
        f"seeds: {seeds} ({len(summary)} runs)",
        f"data: {_joined(summary['data_copy'])}" if len(summary) else "data: unknown",
        f"hardware: {_joined(summary['hardware'])}" if len(summary) else "hardware: unknown",
        f"commit: {_joined(summary['commit'])}" if len(summary) else "commit: unknown",
        wall,
    ]
    return "; ".join(parts)


def table6(summary: pd.DataFrame) -> pd.DataFrame:
    """Table 6 in the paper's row order: the paper's column beside ours (best, mean, std over seeds).

    ResNet depths with no finished run are marked "not run"; the other methods are quoted.
    """
    _check_one_profile(summary)
    # Table 6's ResNets are CIFAR nets with option A shortcuts (Sec. 4.2).
    runs = summary[(summary["family"] == "cifar") & (summary["shortcut"] == "A")] if len(summary) else summary
    rows = []
    for paper_row in TABLE6:
        row = {
            "method": paper_row.method,
            "# layers": "–" if paper_row.layers is None else str(paper_row.layers),
            "# params": paper_row.params or "–",
            "paper error (%)": paper_row.printed,
            "# params (ours)": "",
            "ours best": math.nan,
            "ours mean": math.nan,
            "ours std": math.nan,
            "seeds": pd.NA,
            "ours mean 95% CI": "",
            "paper in CI": "",
            "ours mean − paper": math.nan,
            "note": "",
        }
        if paper_row.model is None:
            row["note"] = "quoted from the paper"
            rows.append(row)
            continue
        mine = runs[runs["model"] == paper_row.model] if len(runs) else runs
        if len(mine) == 0:
            row.update({"seeds": 0, "note": "not run"})
            rows.append(row)
            continue
        stats = seed_statistics(mine["final_test_error"])
        params = mine["params"].iloc[0]
        paper_reference = paper_row.mean if paper_row.mean is not None else paper_row.error
        row.update(
            {
                "# params (ours)": "" if pd.isna(params) else format_params(int(params)),
                "ours best": stats["best"],
                "ours mean": stats["mean"],
                "ours std": stats["std"],
                "seeds": stats["seeds"],
                "ours mean 95% CI": format_interval(stats["ci_low"], stats["ci_high"]),
                "paper in CI": inside(paper_reference, stats["ci_low"], stats["ci_high"]),
                "ours mean − paper": stats["mean"] - paper_reference,
            }
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    table["seeds"] = table["seeds"].astype("Int64")
    return table


def depth_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """Plain vs residual at equal depth: final training and test error (%), mean over seeds.

    The quick-profile reports state the qualitative finding of Figs. 1 and 6 from this table.
    """
    _check_one_profile(summary)
    runs = summary
    rows = []
    for depth in sorted(int(d) for d in runs["depth"].unique()):
        row = {"depth": depth}
        for kind, residual in (("plain", False), ("ResNet", True)):
            mine = runs[(runs["depth"] == depth) & (runs["residual"].astype(bool) == residual)]
            row[f"{kind} train error"] = mine["final_train_error"].mean() if len(mine) else math.nan
            row[f"{kind} test error"] = mine["final_test_error"].mean() if len(mine) else math.nan
            row[f"{kind} seeds"] = len(mine)
        rows.append(row)
    columns = ["depth"] + [f"{k} {m}" for k in ("plain", "ResNet") for m in ("train error", "test error", "seeds")]
    return pd.DataFrame(rows, columns=columns)


def _cell(value) -> str:
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        return f"{value:.2f}"  # the paper prints errors with two decimals
    return str(value).replace("|", "\\|")


def render_markdown(df: pd.DataFrame, *, title: str, footer: str) -> str:
    """`df` as a markdown table under a `## title` heading, with `footer` as a paragraph below it."""
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    header = "| " + " | ".join(_cell(str(c)) for c in df.columns) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([f"## {title}", "", header, rule, *body, "", footer.strip(), ""])


def response_table(responses: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Fig. 7 in numbers: per net, the median, mean and extremes of its layers' response stds.

    With several seeds each statistic is the mean over the seeds' runs.
    """
    rows = []
    for model in models:
        mine = responses[responses["model"] == model]
        if len(mine) == 0:
            continue
        per_run = mine.groupby("run_id")["std"].agg(["median", "mean", "min", "max", "count"])
        first = mine[mine["layer_index"] == 1].groupby("run_id")["std"].first()
        rows.append(
            {
                "net": model,
                "layers": int(per_run["count"].iloc[0]),
                "median std": per_run["median"].mean(),
                "mean std": per_run["mean"].mean(),
                "min std": per_run["min"].mean(),
                "max std": per_run["max"].mean(),
                "first layer std": first.mean(),
                "seeds": len(per_run),
            }
        )
    columns = ["net", "layers", "median std", "mean std", "min std", "max std", "first layer std", "seeds"]
    return pd.DataFrame(rows, columns=columns)


def converged_from(curves: pd.DataFrame, run_id: str, threshold: float) -> float:
    """The first logged iteration from which the running training error stays below `threshold` (%).

    "Stays": at chance (90% on CIFAR-10) a 10-iteration running mean wanders a few points either
    way, so the first dip below 90% says nothing; nan if the run never stays below it.
    """
    rows = curves[(curves["run_id"] == run_id)].dropna(subset=["train/error"]).sort_values("step")
    above = rows["train/error"].to_numpy() >= threshold
    if len(rows) == 0 or above[-1]:
        return math.nan
    last_above = above.nonzero()[0]
    return float(rows["step"].iloc[last_above[-1] + 1 if len(last_above) else 0])


def ablation_table(summary: pd.DataFrame, curves: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """One row per (net, variant): last-iterate errors with their spread over seeds, and when training
    started converging (running training error below 90% and 80% for good: Sec. 4.2's thresholds)."""
    _check_one_profile(summary)
    rows = []
    for model in dict.fromkeys(summary["model"]):
        for variant in variants:
            mine = summary[(summary["model"] == model) & (summary["variant"] == variant)]
            if len(mine) == 0:
                continue
            stats = seed_statistics(mine["final_test_error"])
            below90 = [converged_from(curves, r, 90.0) for r in mine["run_id"]]
            below80 = [converged_from(curves, r, 80.0) for r in mine["run_id"]]
            rows.append(
                {
                    "net": model,
                    "variant": variant,
                    "seeds": stats["seeds"],
                    "train error": mine["final_train_error"].astype(float).mean(),
                    "test error best": stats["best"],
                    "test error mean": stats["mean"],
                    "test error std": stats["std"],
                    "test mean 95% CI": format_interval(stats["ci_low"], stats["ci_high"]),
                    "top-5 test error": pd.to_numeric(mine["final_test_top5_error"]).mean(),
                    "train < 90% from iter.": float(np.nanmean(below90)) if not np.isnan(below90).all() else math.nan,
                    "train < 80% from iter.": float(np.nanmean(below80)) if not np.isnan(below80).all() else math.nan,
                    "wall time per run": format_duration(float(pd.to_numeric(mine["wall_time_s"]).mean())),
                }
            )
    table = pd.DataFrame(rows)
    for column in ("train < 90% from iter.", "train < 80% from iter."):
        if column in table:
            table[column] = table[column].round().astype("Int64")  # iterations: whole numbers
    return table


# --- Tables 2-5: ImageNet ----------------------------------------------------------------------------


def run_label(model: str, variant: str = "") -> str:
    """A run's row label as the paper prints it: "plain-34", "ResNet-34 B", "ResNet-50"."""
    from resnet_repro.plotting import model_label

    return f"{model_label(model)} {variant}".strip()


def imagenet_table(summary: pd.DataFrame, paper_rows, protocol: str) -> pd.DataFrame:
    """Tables 2-4: the paper's rows (quoted methods too) beside our last-iterate errors under `protocol`.

    `paper_rows` are paper.ImageNetResult rows; ours are matched by label (`run_label`), their errors read
    from the `<protocol>_top1_error` / `_top5_error` columns (the run's recorded evaluation), mean over seeds.
    """
    _check_one_profile(summary)
    ours = summary.assign(
        label=[run_label(m, v or "") for m, v in zip(summary["model"], summary["variant"], strict=True)]
    )
    ours_labels = list(dict.fromkeys(ours["label"]))
    rows = []
    for paper_row in paper_rows:
        rows.append(_imagenet_row(paper_row.method, paper_row.top1, paper_row.top5, ours, protocol, paper_row.note))
    for label in ours_labels:  # our runs the paper's table has no row for
        if label not in {r.method for r in paper_rows}:
            rows.append(_imagenet_row(label, None, None, ours, protocol, "not in the paper's table"))
    table = pd.DataFrame(rows)
    table["seeds"] = table["seeds"].astype("Int64")
    return table


def _imagenet_row(method, paper_top1, paper_top5, ours, protocol, note) -> dict:
    row = {
        "method": method,
        "paper top-1": math.nan if paper_top1 is None else paper_top1,
        "paper top-5": math.nan if paper_top5 is None else paper_top5,
        "ours top-1": math.nan,
        "ours top-5": math.nan,
        "seeds": pd.NA,
        "ours − paper (top-1)": math.nan,
        "note": note,
    }
    mine = ours[ours["label"] == method]
    if len(mine) == 0:
        if re.fullmatch(r"(plain|ResNet)-\d+( [ABC])?", method):  # a net of ours: this profile has not run it
            row["note"], row["seeds"] = "; ".join(filter(None, [note, "not run"])), 0
        else:
            row["note"] = "quoted from the paper"
        return row
    top1 = pd.to_numeric(mine.get(f"{protocol}_top1_error", pd.Series(dtype=float)), errors="coerce")
    top5 = pd.to_numeric(mine.get(f"{protocol}_top5_error", pd.Series(dtype=float)), errors="coerce")
    row["seeds"] = int(top1.notna().sum())  # the runs tested with the protocol: the mean is over these
    untested = len(mine) - row["seeds"]
    if untested:
        row["note"] = "; ".join(filter(None, [note, f"{untested} trained run(s) not yet tested with {protocol}"]))
    if row["seeds"] == 0:
        return row
    row["ours top-1"], row["ours top-5"] = top1.mean(), top5.mean()
    if paper_top1 is not None:
        row["ours − paper (top-1)"] = top1.mean() - paper_top1
    return row


def ensemble_table(members: pd.DataFrame, ensemble: dict, paper_rows) -> pd.DataFrame:
    """Table 5: the paper's ensembles (test server) and ours (softmax average of `members`, on the user's split).

    `ensemble` holds the ensemble's "top1"/"top5" error and its member count; `members` one row per member
    with its own `top5` error on the same split.
    """
    rows = [
        {"method": r.method, "top-5 (%)": r.top5, "set": "ILSVRC test server (paper)", "note": r.note}
        for r in paper_rows
    ]
    for m in members.itertuples(index=False):
        rows.append({"method": f"{m.label} (member)", "top-5 (%)": m.top5, "set": "val split (ours)", "note": m.run_id})
    rows.append(
        {
            "method": f"ensemble of {ensemble['members']} (ours)",
            "top-5 (%)": ensemble["top5"],
            "set": "val split (ours)",
            "note": f"softmax average; top-1 {ensemble['top1']:.2f}%",
        }
    )
    return pd.DataFrame(rows)
