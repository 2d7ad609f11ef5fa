"""Experiments (one per paper figure or table) and the profiles that size them; applied in one place.

An experiment names its dataset, its runs (models x variants x seeds), the test protocol its table
reports and what it renders; a profile of that dataset (`paper`, `quick`, `smoke`) says how long and
how wide each run trains. `plan_runs` turns the pair into the list of TrainSpecs.
"""

import dataclasses
from dataclasses import dataclass, field

from resnet_repro.data import get_dataset
from resnet_repro.errors import UserError
from resnet_repro.models import model_info
from resnet_repro.spec import IMAGENET_BATCH, Schedule, TrainSpec, imagenet_lr, run_id


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
    render: str  # a renderer registered in report.py: "train_test", "curves", "table6", "responses", ...
    dataset: str = "cifar10"  # a key of resnet_repro.data.DATASETS; its profiles size the runs
    # The test protocol (evaluation.PROTOCOLS) the artifact reports, applied to each run's last iterate after
    # training and recorded in its run.json; None: the test error logged during training.
    protocol: str | None = None
    keep_probabilities: bool = False  # keep each run's test probabilities (Table 5 averages them over models)
    panels: tuple[Panel, ...] = ()
    seeds: dict[str, int] = field(default_factory=dict)  # runs per model where the paper made several
    labels: dict[str, str] = field(default_factory=dict)  # legend labels that differ from "ResNet-56"
    variants: tuple[Variant, ...] = (Variant(""),)  # ablations: every model is run once per variant
    variants_of: dict[str, tuple[Variant, ...]] = field(default_factory=dict)  # per model, e.g. Table 3's 34 A/B/C
    # Per-profile changes for this artifact only, e.g. {"quick": {"depths": None, "schedule": ...}}: a
    # footnote experiment may need another budget than the figures share (its `purpose` says which).
    profile_changes: dict[str, dict] = field(default_factory=dict)

    def runs_of(self, model: str) -> int:
        return self.seeds.get(model, 1)

    def profile(self, name: str) -> "Profile":
        """The named profile as this artifact runs it."""
        return dataclasses.replace(get_profile(name, self.dataset), **self.profile_changes.get(name, {}))


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
    data: dict = field(default_factory=dict)  # changes to the dataset's config, e.g. {"full": False}
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
    # DEVIATION (paper: 64k iterations): Sec. 4.2 scaled to 8,000 iterations, the budget searched for the
    # shortest on which the residual nets' depth advantage can show on one CPU; its results are labelled "mid".
    "mid": Profile(
        "mid",
        Schedule().scaled(8000),
        log_every=20,
        eval_every=500,
        checkpoint_every=500,
        depths=(20, 32, 44, 56),
        max_seeds=1,
        purpose="Sec. 4.2 scaled to 8,000 iterations (lr /10 at 4,000 and 6,000), one seed, 20 to 56 layers: "
        "sized for a CPU over a few sessions; for the depth findings (Fig. 1, Fig. 6, Table 6's order), not the "
        "paper's final errors",
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
        data={"full": False},
        purpose="seconds, for tests: checks the plumbing, says nothing about the paper",
    ),
}

IMAGENET_PROFILES = {
    # DEVIATION (paper: lr /10 "when the error plateaus", on a validation error it does not show): fixed drops
    # at 15e4 and 30e4 iterations, where Fig. 4's curves drop, so a run is a function of its spec alone;
    # `--lr-plateau N` applies the paper's rule instead (it then steers the lr by the val error it reports).
    "paper": Profile(
        "paper",
        Schedule(max_iters=600_000, milestones=(150_000, 300_000), lr=imagenet_lr(IMAGENET_BATCH), warmup="off"),
        log_every=100,
        eval_every=5000,
        checkpoint_every=5000,
        batch_size=IMAGENET_BATCH,
        purpose="Sec. 3.4: batch 256 (--devices 8 --strategy ddp: 32 per GPU, as the paper), lr 0.1 divided by "
        "10 at 15e4 and 30e4 iterations (where Fig. 4 drops), 60e4 iterations (about 120 epochs), weight decay "
        "1e-4, momentum 0.9; validation every 5,000 iterations on ILSVRC-2012 val, centre crops",
    ),
    "smoke": Profile(
        "smoke",
        Schedule(max_iters=4, milestones=(2,), lr=imagenet_lr(4), warmup="off"),
        log_every=2,
        eval_every=2,
        checkpoint_every=2,
        batch_size=4,
        # 64x64 crops of images resized to [73, 137]: Sec. 3.4's geometry (224 in [256, 480]) scaled by 64/224.
        data={"crop": 64, "scale": (73, 137), "eval_batch_size": 8},
        purpose="seconds, for tests, on generated images (pass --subset): checks the plumbing at 64x64 crops, "
        "says nothing about the paper",
    ),
}

DATASET_PROFILES = {"cifar10": PROFILES, "imagenet": IMAGENET_PROFILES}


def get_profile(name: str, dataset: str = "cifar10") -> Profile:
    profiles = DATASET_PROFILES[get_dataset(dataset).name]
    if name not in profiles:
        raise UserError(f"unknown {dataset} profile {name!r}: choose one of {', '.join(profiles)}")
    return profiles[name]


def plan_runs(experiment: Experiment, profile: Profile, data=None) -> list[TrainSpec]:
    """The TrainSpecs an experiment needs under a profile, in the experiment's order."""
    return [spec for _, spec in plan_variants(experiment, profile, data)]


def default_data(dataset: str):
    """The dataset's config with nothing given (where the data is comes from the command line)."""
    return get_dataset(dataset).config()


def plan_variants(experiment: Experiment, profile: Profile, data=None) -> list[tuple[Variant, TrainSpec]]:
    """(variant, spec) for each run, models x variants x seeds in the experiment's order; `data` is the
    experiment's dataset config from the command line (None: the default), which the profile changes."""
    data = dataclasses.replace(data or default_data(experiment.dataset), **profile.data)
    planned = []
    for model in experiment.models:
        info = model_info(model)
        if profile.depths is not None and info.depth not in profile.depths:
            continue
        seeds = experiment.runs_of(model)
        if profile.max_seeds is not None:
            seeds = min(seeds, profile.max_seeds)
        for variant in experiment.variants_of.get(model, experiment.variants):
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
                    dataset=experiment.dataset,
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
