"""What one training run is, as frozen dataclasses (Sec. 4.2 defaults); `asdict` feeds logs and W&B."""

import dataclasses
import math
from dataclasses import dataclass, field

from resnet_repro.data import get_dataset
from resnet_repro.data.cifar10 import DataConfig
from resnet_repro.data.imagenet import ImageNetConfig
from resnet_repro.errors import UserError

# Sec. 3.4: "mini-batch size of 256 ... learning rate starts from 0.1". With another global batch the lr
# scales linearly (0.1 x batch / 256), so users with fewer GPUs train the same schedule.
IMAGENET_BATCH, IMAGENET_LR = 256, 0.1


def imagenet_lr(batch_size: int) -> float:
    """Sec. 3.4's lr for a global mini-batch of `batch_size` images: 0.1 x batch / 256."""
    return IMAGENET_LR * batch_size / IMAGENET_BATCH


@dataclass(frozen=True)
class Schedule:
    """Sec. 4.2: lr 0.1, divided by 10 at 32k and 48k iterations, terminated at 64k."""

    max_iters: int = 64_000
    milestones: tuple[int, ...] = (32_000, 48_000)
    lr: float = 0.1
    warmup: str = "auto"  # "auto": lr 0.01 until train error < 80% for 110+ CIFAR layers (Sec. 4.2); "on"; "off"
    # Sec. 3.4's rule instead of milestones: lr /10 once `plateau` evaluations in a row brought no improvement
    # of the logged test (ImageNet: val) error (schedules.plateaued); None: the fixed milestones.
    plateau: int | None = None

    def scaled(self, max_iters: int) -> "Schedule":
        """The same shape over `max_iters`: milestones at the same fractions (CIFAR-10's: 50% and 75%)."""
        milestones = tuple(m * max_iters // self.max_iters for m in self.milestones)
        return dataclasses.replace(self, max_iters=max_iters, milestones=milestones)


@dataclass(frozen=True)
class TrainSpec:
    """Everything that decides a run's numbers (and nothing that does not, such as output paths)."""

    model: str = "resnet20"
    shortcut: str | None = None  # None: the model's paper default (option A on CIFAR)
    schedule: Schedule = field(default_factory=Schedule)
    # DEVIATION (paper: 128 on two GPUs, so Caffe's BN normalised over 64 images per GPU): on one device BN
    # normalises over all 128; `--devices 2 --strategy ddp` gives the paper's 64 per device.
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    dataset: str = "cifar10"  # a key of resnet_repro.data.DATASETS; `data` is that dataset's config
    data: DataConfig | ImageNetConfig = field(default_factory=DataConfig)
    log_every: int = 20  # iterations per logged train loss/error (running mean over these)
    eval_every: int = 1000  # iterations between evaluations on the whole test (and val) set
    checkpoint_every: int = 500  # iterations between checkpoints; a multiple of log_every
    channels_last: bool = True  # memory layout only: same numbers, faster on CPU and GPU
    # After the last iteration, recompute every BN layer's mean and variance as a plain average over this many
    # training images (augmented as in training) instead of the running averages: what the paper's released
    # ImageNet models did ("precise BN"); 0: keep the running averages (the paper's text says nothing).
    precise_bn: int = 0

    def validate(self) -> None:
        """Raise UserError for settings that cannot describe a run."""
        s = self.schedule
        if s.max_iters <= 0:
            raise UserError(f"--iterations must be positive, got {s.max_iters}")
        if not math.isfinite(s.lr) or s.lr <= 0:  # `nan <= 0` is False: test finiteness first
            raise UserError(f"--lr must be positive, got {s.lr}")
        if not 0 <= self.seed < 2**32:  # the range Lightning's seed_everything accepts
            raise UserError(f"--seed must be between 0 and {2**32 - 1}, got {self.seed}")
        increasing = all(a < b for a, b in zip(s.milestones, s.milestones[1:], strict=False))
        if not increasing or any(m <= 0 or m >= s.max_iters for m in s.milestones):
            raise UserError(
                f"--milestones {','.join(map(str, s.milestones))} must increase and lie strictly between 0 and --iterations {s.max_iters}"
            )
        from resnet_repro.models import model_info  # deferred: models import nothing from here

        dataset = get_dataset(self.dataset)
        family = model_info(self.model).family
        if family != dataset.family:
            takes = (
                "the 6n+2 nets (resnet20, plain56, resnet110, ...)"
                if dataset.family == "cifar"
                else ("the Table 1 nets (plain18/34, resnet18, resnet34, resnet50, resnet101, resnet152)")
            )
            raise UserError(
                f"{self.model} is {'an ImageNet' if family == 'imagenet' else 'a CIFAR'} net; {dataset.name} training "
                f"takes {takes}; see `resnet-repro models --family {dataset.family}`"
            )
        if not isinstance(self.data, dataset.config):
            raise UserError(
                f"a {dataset.name} run takes a data config of type {dataset.config.__name__}, got {type(self.data).__name__}"
            )
        if s.plateau is not None and s.plateau < 1:
            raise UserError(f"--lr-plateau must be at least 1 evaluation, got {s.plateau}")
        if s.plateau is not None and s.milestones:
            raise UserError("--lr-plateau decides the lr drops itself: give it or --milestones, not both")
        if self.precise_bn < 0:
            raise UserError(f"--precise-bn must be a number of training images (0: off), got {self.precise_bn}")
        if s.warmup not in ("auto", "on", "off"):
            raise UserError(f"--warmup must be auto, on or off, got {s.warmup!r}")
        if self.batch_size <= 0:
            raise UserError(f"--batch-size must be positive, got {self.batch_size}")
        for name in ("log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.checkpoint_every % self.log_every:
            # A checkpoint is only written after the loss check of its own step (see module.py).
            raise UserError(
                f"--checkpoint-every {self.checkpoint_every} must be a multiple of --log-every {self.log_every}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSpec":
        d = dict(d)
        sched = d.pop("schedule", {})
        sched = Schedule(**{**sched, "milestones": tuple(sched.get("milestones", Schedule().milestones))})
        config = get_dataset(d.get("dataset", "cifar10")).config
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("data", {}).items()}  # JSON lists
        return cls(schedule=sched, data=config(**data), **d)


# Fields that say where data lives or how memory is laid out, not what is computed: they do not
# enter a run's identity, so the same run found under another data path is not trained again.
_NOT_IDENTITY = {
    ("data", "workers"),
    ("data", "data"),
    ("data", "root"),
    ("data", "eval_batch_size"),
    ("checkpoint_every",),
    ("channels_last",),
}


# Fields added after runs were committed, with the default that means "as before".
_ADDED_LATER = {("schedule", "plateau"): None, ("precise_bn",): 0}


def spec_digest(spec: TrainSpec) -> str:
    """A short content hash of everything that decides the run's numbers."""
    import hashlib
    import json

    d = spec.to_dict()
    for path in _NOT_IDENTITY:
        node = d
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    if d["dataset"] == "cifar10":  # the field came with ImageNet: CIFAR-10 runs keep the ids they had before it
        del d["dataset"]
    for path, default in _ADDED_LATER.items():  # at their defaults, later fields leave earlier ids unchanged
        node = d
        for key in path[:-1]:
            node = node[key]
        if node.get(path[-1], default) == default:
            node.pop(path[-1], None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


def run_id(spec: TrainSpec) -> str:
    """The run's directory name: model, seed and the spec digest, e.g. `resnet20-s0-1a2b3c4d`."""
    return f"{spec.model}-s{spec.seed}-{spec_digest(spec)}"
