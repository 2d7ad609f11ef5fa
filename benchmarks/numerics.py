"""Do the speed options change the result? Last-iterate errors under fp32, bf16-mixed and torch.compile.

Options that change numerics are off by default; this measures their effect instead of guessing it.
It trains one model (default resnet20) on a profile's schedule (default quick: 2,000 iterations,
lr /10 at 1,000 and 1,500) once per variant and seed. A seed fixes the initialisation, the data order
and the crop/flip draws, so the runs of one seed differ only in their arithmetic; but that difference
grows along the run until a variant's run is, statistically, one more seed. So the table compares each
option's mean error with fp32's, against a noise band of two standard errors taken from the spread of
the fp32 seeds: a shift inside the band is not an effect this many seeds can show.

    python benchmarks/numerics.py                    # resnet20, quick, seeds 0 and 1, 2 runs at a time:
                                                     # ~45 min on 2 CPU cores
    python benchmarks/numerics.py --seeds 5          # a narrower band (cached runs are reused)
    python benchmarks/numerics.py --profile paper --jobs 6 --accelerator gpu   # the paper's 64k iterations

Runs are cached and resume like an artifact's: fp32 runs live in --runs-dir (shared with the paper
artifacts: the quick resnet20 seed 0 of Fig. 6 / Table 6 is the same run), the others in
--runs-dir/numerics-<variant>/. Writes results/benchmarks/numerics.md and numerics.csv.
"""

import argparse
import dataclasses
import math
import os
import shlex
import sys
from pathlib import Path

import pandas as pd

from resnet_repro.data.cifar10 import DataConfig
from resnet_repro.data.sources import DATA_ENV
from resnet_repro.errors import UserError, exit_status
from resnet_repro.experiment import Experiment, get_profile, plan_runs
from resnet_repro.records import load_runs
from resnet_repro.runner import pending_runs, train_runs
from resnet_repro.spec import run_id
from resnet_repro.tables import format_duration, provenance_footer, render_markdown
from resnet_repro.training import Hardware

REPO = Path(__file__).resolve().parents[1]
REFERENCE = "fp32"
VARIANTS = {  # name -> the Trainer flags it changes
    "fp32": {"precision": "32-true", "compile": False},  # the paper's arithmetic: the reference
    "bf16-mixed": {"precision": "bf16-mixed", "compile": False},  # autocast: convolutions in bfloat16
    "compile": {"precision": "32-true", "compile": True},  # torch.compile of the network (fused kernels)
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/numerics.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--profile", default="quick", help="paper, quick or smoke (default: quick)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per variant (default: 2)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once (default: 2)")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run (default: cores / jobs)")
    parser.add_argument(
        "--data", default=None, help=f"CIFAR-10 source (default: ${DATA_ENV}, else torchvision's download)"
    )
    parser.add_argument("--data-root", default=None, help="decoded-cache directory (default: ~/.cache/resnet-repro)")
    parser.add_argument("--allow-partial", action="store_true", help="accept a partial CIFAR-10 (tests only)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks")
    parser.add_argument("--wandb", choices=["on", "offline", "off"], default="off", help="default: off")
    return parser


def variant_runs_dir(runs_dir: Path, variant: str) -> Path:
    return runs_dir if variant == REFERENCE else runs_dir / f"numerics-{variant}"


def train_variants(args, variants: list[str]) -> tuple[pd.DataFrame | None, list[str]]:
    """Train (or reuse) every variant x seed, all in one pool.

    Returns one summary row per run (with its variant and rate), or None and the unfinished runs when
    Ctrl-C or a crash stopped some: a table of the runs that happened to finish would compare unlike sets.
    """
    profile = dataclasses.replace(get_profile(args.profile), depths=None, max_seeds=None)
    experiment = Experiment(
        id="numerics",
        caption="effect of bf16 and torch.compile on final error",
        models=(args.model,),
        render="table6",
        seeds={args.model: args.seeds},
    )
    data = DataConfig(
        data=args.data,
        root=args.data_root,
        full=not args.allow_partial,
    )
    specs = plan_runs(experiment, profile, data)
    # The same threads per run for every variant, also when a single run is left to train, so the logged
    # rates compare like with like.
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    todo = []
    for variant in variants:
        hardware = Hardware(accelerator=args.accelerator, threads=threads, **VARIANTS[variant])
        todo += pending_runs(specs, variant_runs_dir(args.runs_dir, variant), hardware)
    print(
        f"numerics ({profile.name}): {len(variants)} variants x {len(specs)} seeds, {len(todo)} to train, "
        f"{args.jobs} at a time",
        flush=True,
    )
    records = train_runs(
        todo,
        {
            "wandb": args.wandb,
            "group": f"numerics-{profile.name}",
            "progress": False,
            "extra_meta": {"profile": profile.name},
        },
        args.jobs,
    )
    unfinished = [
        f"{run.run_dir.parent.name}/{record['run_id']}"
        for run, record in zip(todo, records, strict=True)
        if record["status"] in ("interrupted", "not started")
    ]
    if unfinished:
        return None, unfinished
    frames = []
    for variant in variants:
        summary, curves = load_runs(variant_runs_dir(args.runs_dir, variant), [run_id(s) for s in specs])
        # Median logged rate over the run (the last interval alone is noisy); evaluations are not counted.
        rate = curves.groupby("run_id")["throughput"].median().rename("images_per_s")
        frames.append(summary.join(rate, on="run_id").assign(variant=variant))
    return pd.concat(frames, ignore_index=True), []


def compare(runs: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per variant: mean errors, the shift of the mean from fp32, its noise band, and speed."""
    ref = runs[runs["variant"] == REFERENCE]
    # Rounding differences grow during training until a variant's run is, statistically, another seed (its
    # paired differences from fp32 match fp32's seed-to-seed ones): compare means, fp32's spread as the noise.
    sigma = ref["final_test_error"].std(ddof=1) if len(ref) > 1 else float("nan")
    rows = []
    for variant, group in runs.groupby("variant", sort=False):
        rows.append(
            {
                "variant": variant,
                "runs": len(group),
                "test error": group["final_test_error"].mean(),
                "Δ test vs fp32": group["final_test_error"].mean() - ref["final_test_error"].mean(),
                "noise (2 SE)": 2 * sigma * math.sqrt(1 / len(group) + 1 / len(ref)),
                "train error": group["final_train_error"].mean(),
                "Δ train vs fp32": group["final_train_error"].mean() - ref["final_train_error"].mean(),
                "img/s": group["images_per_s"].median(),
                "speed vs fp32": f"{group['images_per_s'].median() / ref['images_per_s'].median():.2f}x",
            }
        )
    return pd.DataFrame(rows), {"sigma": sigma, "seeds": len(ref)}


def verdict(table: pd.DataFrame, noise: dict) -> list[str]:
    """One plain sentence per option: is its shift of the mean test error outside the noise band?"""
    if noise["seeds"] < 2:
        return ["With one fp32 seed there is no noise estimate: run --seeds 2 or more before reading the shifts."]
    lines = []
    for row in table[table["variant"] != REFERENCE].to_dict("records"):
        shift, band = row["Δ test vs fp32"], row["noise (2 SE)"]
        lines.append(
            f"- {row['variant']}: mean test error {abs(shift):.2f} points {'lower' if shift < 0 else 'higher'} "
            f"than fp32, {'inside' if abs(shift) <= band else 'OUTSIDE'} the ±{band:.2f}-point noise band"
            + (
                f": no effect visible with {row['runs']} run(s) per variant; a shift smaller than the band "
                "would not show."
                if abs(shift) <= band
                else ": the option changes the result at this budget, or the seeds were unlucky; add seeds."
            )
        )
    return lines


def render(runs: pd.DataFrame, table: pd.DataFrame, noise: dict, profile: str, command: str) -> str:
    per_run = runs[["variant", "seed", "final_train_error", "final_test_error", "images_per_s", "wall_time_s"]].rename(
        columns={"final_train_error": "train error", "final_test_error": "test error", "images_per_s": "img/s"}
    )
    per_run["wall time"] = per_run.pop("wall_time_s").map(format_duration)
    model = runs["model"].iloc[0]
    footer = provenance_footer(runs, profile=profile)
    intro = (
        f"# Does a speed option change the result? ({model}, last-iterate errors in %)\n\n"
        f"Each variant trains {model} on the same seeds as fp32 (same initialisation, data order and "
        "augmentation draws). Rounding differences still grow during training until a variant's run is, "
        "statistically, one more seed: the table compares mean errors, and "
        "the noise band is two standard errors of that difference, from the fp32 seeds' standard deviation "
        f"({noise['sigma']:.2f} points of test error over {noise['seeds']} seeds). Final training error is the "
        "running mean of the last logging interval, noisier still. img/s is the median logged training rate "
        "of each run as it trained (runs side by side with --jobs, each on its share of the cores); "
        "`benchmarks/throughput.py --precision/--compile` measures speed properly. Generated by "
        f"`{command}`.\n\n"
    )
    return (
        intro
        + render_markdown(table, title="Per option", footer="\n".join(verdict(table, noise)))
        + "\n"
        + render_markdown(per_run, title="Per run", footer=footer)
    )


def run(args) -> int:
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    if REFERENCE not in variants:
        variants.insert(0, REFERENCE)  # every change is measured against fp32 on the same seeds
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    runs, unfinished = train_variants(args, variants)
    if runs is None:
        print(
            f"numerics: stopped with {len(unfinished)} run(s) unfinished ({', '.join(unfinished)}); nothing written. "
            "Run the same command again to continue.",
            flush=True,
        )
        return 130
    table, noise = compare(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(args.out / "numerics.csv", index=False, float_format="%.4g")
    text = render(runs, table, noise, args.profile, shlex.join(["python", "benchmarks/numerics.py", *args.argv]))
    (args.out / "numerics.md").write_text(text)
    print(text, flush=True)
    print(f"numerics: wrote {args.out / 'numerics.md'} and numerics.csv", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return exit_status("numerics", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
