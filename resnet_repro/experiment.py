"""Experiments (one per paper figure or table) and the profiles that size them; applied in one place.

An experiment names its runs (models x seeds) and what it renders; a profile (`paper`, `quick`,
`smoke`) says how long each run trains. `plan_runs` turns the pair into the list of TrainSpecs.
"""

import dataclasses
from dataclasses import dataclass, field

from resnet_repro.data.cifar10 import DataConfig
from resnet_repro.errors import UserError
from resnet_repro.models import model_info
from resnet_repro.spec import Schedule, TrainSpec, run_id


@dataclass(frozen=True)
class Panel:
    """One panel of a curves figure."""

    title: str
    models: tuple[str, ...]


@dataclass(frozen=True)
class Variant:
    """One arm of an ablation: its label and the settings it changes (None: the paper's default)."""

    label: str
    shortcut: str | None = None  # "A", "B" or "C"
    warmup: str | None = None  # "auto", "on" or "off" (Schedule.warmup)


@dataclass(frozen=True)
class Experiment:
    """A paper artifact: its runs and the renderer that draws them (see report.RENDERERS)."""

    id: str  # the paper's numbering: fig1, fig6, table6; also the results/ folder and the W&B group
    caption: str
    models: tuple[str, ...]
    render: str  # a renderer registered in report.py: "train_test", "curves", "table6", "responses", "ablation"
    panels: tuple[Panel, ...] = ()
    seeds: dict[str, int] = field(default_factory=dict)  # runs per model where the paper made several
    labels: dict[str, str] = field(default_factory=dict)  # legend labels that differ from "ResNet-56"
    variants: tuple[Variant, ...] = (Variant(""),)  # ablations: every model is run once per variant
    # Per-profile changes for this artifact only, e.g. {"quick": {"depths": None, "schedule": ...}}: a
    # footnote experiment may need another budget than the figures share (its `purpose` says which).
    profile_changes: dict[str, dict] = field(default_factory=dict)

    def runs_of(self, model: str) -> int:
        return self.seeds.get(model, 1)

    def profile(self, name: str) -> "Profile":
        """The named profile as this artifact runs it."""
        return dataclasses.replace(get_profile(name), **self.profile_changes.get(name, {}))


@dataclass(frozen=True)
class Profile:
    """How long and how wide the runs of an experiment are."""

    name: str
    schedule: Schedule
    log_every: int
    eval_every: int
    checkpoint_every: int
    batch_size: int = 128
    depths: tuple[int, ...] | None = None  # only these depths are run in this profile (and figures say so)
    max_seeds: int | None = None  # at most this many seeds per model
    full_data: bool = True
    purpose: str = ""


PROFILES = {
    "paper": Profile(
        "paper",
        Schedule(),
        log_every=20,
        eval_every=500,
        checkpoint_every=2000,
        purpose="the exact Sec. 4.2 protocol: 64k iterations, batch 128, lr /10 at 32k and 48k, warm-up for 110+ layers",
    ),
    # DEVIATION (paper: 64k iterations, every depth): a CPU-sized profile; its results are labelled "quick".
    "quick": Profile(
        "quick",
        Schedule().scaled(2000),
        log_every=20,
        eval_every=200,
        checkpoint_every=200,
        depths=(20, 56),
        max_seeds=1,
        purpose="Sec. 4.2 scaled to 2,000 iterations (lr /10 at 1,000 and 1,500), one seed, 20 and 56 layers only: "
        "sized for a 2-core CPU session; shows the plain-net degradation and plain vs residual at equal "
        "depth, not the paper's final errors",
    ),
    "smoke": Profile(
        "smoke",
        Schedule().scaled(6),
        log_every=3,
        eval_every=3,
        checkpoint_every=3,
        batch_size=8,
        depths=(20, 56),
        max_seeds=1,
        full_data=False,
        purpose="seconds, for tests: checks the plumbing, says nothing about the paper",
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise UserError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def plan_runs(experiment: Experiment, profile: Profile, data: DataConfig = DataConfig()) -> list[TrainSpec]:
    """The TrainSpecs an experiment needs under a profile, in the experiment's order."""
    return [spec for _, spec in plan_variants(experiment, profile, data)]


def plan_variants(
    experiment: Experiment, profile: Profile, data: DataConfig = DataConfig()
) -> list[tuple[Variant, TrainSpec]]:
    """(variant, spec) for each run, models x variants x seeds in the experiment's order."""
    data = dataclasses.replace(data, full=profile.full_data)
    planned = []
    for model in experiment.models:
        info = model_info(model)
        if profile.depths is not None and info.depth not in profile.depths:
            continue
        seeds = experiment.runs_of(model)
        if profile.max_seeds is not None:
            seeds = min(seeds, profile.max_seeds)
        for variant in experiment.variants:
            # The model's own default is spelled None, so an ablation's default arm is the very run the
            # figures train (the same run id), and the run cache reuses it.
            shortcut = None if variant.shortcut == info.shortcut else variant.shortcut
            schedule = profile.schedule
            if variant.warmup is not None:
                schedule = dataclasses.replace(schedule, warmup=variant.warmup)
            for seed in range(seeds):
                spec = TrainSpec(
                    model=model,
                    shortcut=shortcut,
                    schedule=schedule,
                    batch_size=profile.batch_size,
                    seed=seed,
                    data=data,
                    log_every=profile.log_every,
                    eval_every=profile.eval_every,
                    checkpoint_every=profile.checkpoint_every,
                )
                planned.append((variant, spec))
    return planned


def skipped_models(experiment: Experiment, profile: Profile) -> list[str]:
    """Models of the experiment this profile does not run (outside its budget)."""
    if profile.depths is None:
        return []
    return [m for m in experiment.models if model_info(m).depth not in profile.depths]


def select_runs(specs: list[TrainSpec], only: str | None) -> list[TrainSpec]:
    """`--only NAME`: a run id, or a model name (all its seeds)."""
    if only is None:
        return specs
    chosen = [s for s in specs if only in (run_id(s), s.model, f"{s.model}-s{s.seed}")]
    if not chosen:
        names = ", ".join(run_id(s) for s in specs)
        raise UserError(f"--only {only!r} names no run of this experiment and profile; runs: {names}")
    return chosen
