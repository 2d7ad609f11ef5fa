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
class Experiment:
    """A paper artifact: its runs and how they are rendered (`train_test`, `curves` or `table6`)."""

    id: str  # the paper's numbering: fig1, fig6, table6; also the results/ folder and the W&B group
    caption: str
    models: tuple[str, ...]
    render: str  # "train_test" (Fig. 1 layout), "curves" (Fig. 6 panels) or "table6"
    panels: tuple[Panel, ...] = ()
    seeds: dict[str, int] = field(default_factory=dict)  # runs per model where the paper made several
    labels: dict[str, str] = field(default_factory=dict)  # legend labels that differ from "ResNet-56"

    def runs_of(self, model: str) -> int:
        return self.seeds.get(model, 1)


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
    data = dataclasses.replace(data, full=profile.full_data)
    specs = []
    for model in experiment.models:
        if profile.depths is not None and model_info(model).depth not in profile.depths:
            continue
        seeds = experiment.runs_of(model)
        if profile.max_seeds is not None:
            seeds = min(seeds, profile.max_seeds)
        for seed in range(seeds):
            specs.append(
                TrainSpec(
                    model=model,
                    schedule=profile.schedule,
                    batch_size=profile.batch_size,
                    seed=seed,
                    data=data,
                    log_every=profile.log_every,
                    eval_every=profile.eval_every,
                    checkpoint_every=profile.checkpoint_every,
                )
            )
    return specs


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
