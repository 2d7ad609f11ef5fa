"""The paper's qualitative claims, checked on the runs' last-iterate numbers: each "shown" or "NOT shown".

Every finding line names the claim, where the paper makes it, and the numbers that decide it, so a
reader can check the verdict; a short profile says what its budget cannot show.
"""

import pandas as pd

from resnet_repro import tables
from resnet_repro.experiment import Profile

SHORT_BUDGET = "a short budget favours shallow nets: see the README's 'What a quick profile can show'"
# Below this many seeds a difference between arms is not resolved: at the quick budget, seed-to-seed
# differences of one net reach about 1.4 points (results/benchmarks/numerics.md, three seeds each).
ONE_SEED = "one seed per arm: differences of about a point are within seed-to-seed noise at this budget"


def _verdict(shown: bool) -> str:
    return "shown" if shown else "NOT shown"


def depth_findings(summary: pd.DataFrame, profile: Profile) -> list[str]:
    """The paper's qualitative claims, checked on these runs' last-iterate errors (shown or not shown)."""
    comparison = tables.depth_comparison(summary)
    out = []
    plain = comparison[comparison["plain seeds"] > 0]
    if len(plain) >= 2:
        shallow, deep = plain.iloc[0], plain.iloc[-1]
        shown = deep["plain train error"] > shallow["plain train error"]
        out.append(
            f"deeper plain net, higher training error (Fig. 1): {_verdict(shown)} - "
            f"plain-{deep['depth']:.0f} {deep['plain train error']:.1f}% vs plain-{shallow['depth']:.0f} "
            f"{shallow['plain train error']:.1f}% training error"
        )
    both = comparison[(comparison["plain seeds"] > 0) & (comparison["ResNet seeds"] > 0)]
    for _, row in both.iterrows():
        shown = row["ResNet train error"] < row["plain train error"]
        out.append(
            f"ResNet-{row['depth']:.0f} trains better than plain-{row['depth']:.0f} (Fig. 6): {_verdict(shown)} - "
            f"{row['ResNet train error']:.1f}% vs {row['plain train error']:.1f}% training error, "
            f"{row['ResNet test error']:.1f}% vs {row['plain test error']:.1f}% test error"
        )
    # Table 6's order up to 110 layers; the paper's 1202-layer net overfits (7.93% vs 6.43%), said apart.
    res = comparison[(comparison["ResNet seeds"] > 0) & (comparison["depth"] <= 110)]
    if len(res) >= 2:
        errors = res["ResNet test error"]
        shown = bool(errors.is_monotonic_decreasing and errors.is_unique)  # every step deeper is better
        caveat = "" if profile.name == "paper" or shown else f" ({SHORT_BUDGET})"
        values = ", ".join(f"ResNet-{d:.0f} {e:.1f}%" for d, e in zip(res["depth"], errors, strict=True))
        out.append(f"deeper ResNet, lower test error (Fig. 6, Table 6): {_verdict(shown)}{caveat} - {values}")
    huge = comparison[(comparison["ResNet seeds"] > 0) & (comparison["depth"] == 1202)]
    r110 = comparison[(comparison["ResNet seeds"] > 0) & (comparison["depth"] == 110)]
    if len(huge) and len(r110):
        worse, better = huge.iloc[0]["ResNet test error"], r110.iloc[0]["ResNet test error"]
        out.append(
            f"ResNet-1202 overfits: worse than ResNet-110 (Table 6): {_verdict(worse > better)} - "
            f"{worse:.1f}% vs {better:.1f}% test error"
        )
    return out


def response_findings(table: pd.DataFrame) -> list[str]:
    """Fig. 7's two claims, on the per-net medians of the layer response stds."""
    out = []
    medians = dict(zip(table["net"], table["median std"], strict=True))
    for net in table["net"]:
        if not net.startswith("resnet") or f"plain{net[len('resnet') :]}" not in medians:
            continue
        plain = f"plain{net[len('resnet') :]}"
        shown = medians[net] < medians[plain]
        out.append(
            f"ResNets respond less than their plain counterparts (Fig. 7): {_verdict(shown)} - median std "
            f"{net} {medians[net]:.2f} vs {plain} {medians[plain]:.2f}"
        )
    resnets = table[table["net"].str.startswith("resnet")].assign(depth=lambda t: t["net"].str[6:].astype(int))
    resnets = resnets.sort_values("depth")
    if len(resnets) >= 2:
        shown = resnets["median std"].is_monotonic_decreasing and resnets["median std"].is_unique
        values = ", ".join(f"{n} {m:.2f}" for n, m in zip(resnets["net"], resnets["median std"], strict=True))
        out.append(f"the deeper ResNet, the smaller the responses (Fig. 7): {_verdict(shown)} - median std {values}")
    return out


def ablation_findings(table: pd.DataFrame, varied: str, profile: Profile) -> list[str]:
    """The footnote claims an ablation tests: shortcut options (Table 3) or the 110-layer warm-up (Sec. 4.2)."""
    out = []
    for net, rows in table.groupby("net", sort=False):
        arms = rows.set_index("variant")
        noise = ONE_SEED if int(rows["seeds"].min()) < tables.MIN_SEEDS_FOR_INTERVAL else ""
        if varied == "shortcut":
            for better, worse, claim in (
                ("B", "A", "B slightly better than A"),
                ("C", "B", "C marginally better than B"),
            ):
                if better in arms.index and worse in arms.index:
                    b, w = arms.loc[better, "test error mean"], arms.loc[worse, "test error mean"]
                    out.append(
                        f"{net}: {claim} (Table 3, on ImageNet): {_verdict(b < w)} - test error {better} {b:.2f}% vs "
                        f"{worse} {w:.2f}%" + (f" ({noise})" if noise else "")
                    )
        if varied == "warmup" and len(arms) == 2:
            (warm, warm_row), (cold, cold_row) = arms.iterrows()
            w90, c90 = warm_row["train < 90% from iter."], cold_row["train < 90% from iter."]
            if pd.isna(w90):
                line = f"{warm} never stayed below 90% training error either: nothing to compare"
                shown = False
            elif pd.isna(c90):
                line = f"{cold} never stayed below 90% training error in {int(profile.schedule.max_iters)} iterations"
                shown = True
            else:
                line = f"training error below 90% for good from iteration {c90} ({cold}) vs {w90} ({warm})"
                shown = not pd.isna(w90) and c90 > w90
            out.append(
                f"{net}: lr 0.1 from the start is slow to start converging (Sec. 4.2): {_verdict(shown)} - {line}"
            )
            if profile.name == "paper":
                gap = abs(cold_row["test error mean"] - warm_row["test error mean"])
                out.append(
                    f"{net}: still reaches similar accuracy, within a point (Sec. 4.2): {_verdict(gap < 1.0)} - test error "
                    f"{cold_row['test error mean']:.2f}% ({cold}) vs {warm_row['test error mean']:.2f}% ({warm})"
                )
            else:
                out.append(
                    f"{net}: 'still reaches similar accuracy' is not tested at this budget "
                    f"({int(profile.schedule.max_iters)} iterations; the claim is about 64k)"
                )
    return out
