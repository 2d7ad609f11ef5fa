"""ImageNet (ILSVRC-2012) for Sec. 3.4: scale augmentation, 224x224 crops and flips, colour augmentation.

"The image is resized with its shorter side randomly sampled in [256, 480] for scale augmentation. A
224x224 crop is randomly sampled from an image or its horizontal flip, with the per-pixel mean subtracted.
The standard color augmentation in [21] is used." JPEGs are decoded by DataLoader workers, resized,
cropped and flipped as uint8; the colour shift and the mean subtraction happen on the training device.
Every draw (order, scale, crop offset, flip, colour) is a pure function of (seed, iteration, position in
the global batch), so a resumed run sees exactly the batches an uninterrupted run would have seen.
"""

import hashlib
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.datasets.folder import find_classes, make_dataset
from torchvision.datasets.imagenet import META_FILE, load_meta_file
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from resnet_repro.data.cifar10 import _stream_seed
from resnet_repro.errors import DataError, UserError
from resnet_repro.evaluation import PROTOCOLS, views

# torchvision 0.29 deprecates its image decoders (for TorchCodec's) with a warning on every call; they decode
# as before, and TorchCodec is no dependency of this project.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities", category=DeprecationWarning)

# ILSVRC-2012 classification: 1000 classes, 1,281,167 training and 50,000 validation images.
ILSVRC2012_CLASSES = 1000
ILSVRC2012_SIZES = {"train": 1_281_167, "val": 50_000}
SPLITS = ("train", "val")
# What decode_image reads; ImageNet's own files are all .JPEG (one is really a PNG, which it detects).
EXTENSIONS = (".jpeg", ".jpg", ".png")
ARCHIVES = {"train": "ILSVRC2012_img_train.tar", "val": "ILSVRC2012_img_val.tar"}

# DEVIATION (paper: AlexNet's eigenvectors of the training set's RGB covariance, not published): the
# widely used ImageNet values of fb.resnet.torch, Facebook's reproduction of this paper (eigenvalues, and
# eigenvectors as columns, of the RGB covariance of pixel values in [0, 1]).
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ]
)
PCA_STD = 0.1  # AlexNet [21]: alpha ~ N(0, 0.1) per principal component, drawn once per image

# DEVIATION (paper: "the per-pixel mean", of a set it does not say, and not published): the mean of the
# centre 224x224 crops (shorter side 256: the test protocol's view) of a fixed sample of training images,
# the same sample for every run of one copy (not the run's seed), so runs differ only by their own draws.
MEAN_SAMPLE = 10_000

# Generator streams of `_stream_seed` (CIFAR-10's are 1: order, 2: crops and flips, 3: hold-out).
_ORDER, _DRAWS, _MEAN = 1, 6, 7


class DataWarning(UserWarning):
    """A data source that is usable but not the paper's (e.g. an ILSVRC-2012 copy of another size)."""


def _default_workers() -> int:
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class ImageNetConfig:
    """Where ImageNet is and how Sec. 3.4 preprocesses it."""

    data: str | None = None  # ROOT with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (ImageFolder or torchvision's)
    subset: int | None = None  # the first N classes in sorted wnid order (small runs); None: all 1000
    eval_batch_size: int = 250
    workers: int = field(default_factory=_default_workers)  # DataLoader worker processes per loader
    scale: tuple[int, int] = (256, 480)  # Sec. 3.4: shorter side drawn uniformly from [256, 480]
    crop: int = 224
    color: bool = True  # AlexNet's PCA colour augmentation [21]
    mean: str = "per-pixel"  # Sec. 3.4; "per-channel": the mean image's channel means (not the paper's)


# --- the source ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitFiles:
    """One split's images: paths relative to its folder, and int64 labels indexing the wnids."""

    folder: Path
    # Fixed-width bytes in one numpy array, not a list of str: forked DataLoader workers then share the
    # listing (1.3M names) instead of copying it page by page as Python's reference counts touch it.
    names: np.ndarray
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        return os.path.join(self.folder, os.fsdecode(self.names[i]))


def _one_line(exc: BaseException) -> str:
    """An exception's first line, without the C++ source location torchvision's decoders prefix."""
    lines = str(exc).strip().splitlines()
    return re.sub(r"^.*\.(?:cpp|h):\d+, ", "", lines[0]) if lines else type(exc).__name__


def _layout_help(root: Path) -> str:
    return f"need {root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/*.JPEG (an ImageFolder or torchvision ImageNet root)"


def _split_folders(root: Path) -> dict[str, Path]:
    """The train and val folders of `root`; a DataError saying what to do when one is missing."""
    if not root.is_dir():
        raise DataError(f"ImageNet root {root} is not a directory; pass --data ROOT: {_layout_help(root)}")
    folders = {split: root / split for split in SPLITS}
    for split, folder in folders.items():
        if folder.is_dir():
            continue
        if (root / ARCHIVES[split]).is_file():
            # torchvision's ImageNet(root, split) extracts its archives on first use; we do not do that
            # implicitly (it writes ~150 GB), so the user runs it once.
            raise DataError(
                f"ImageNet at {root} has {ARCHIVES[split]} but no {split}/ folder: extract it once with "
                f"python -c \"import torchvision; torchvision.datasets.ImageNet('{root}', split='{split}')\""
            )
        raise DataError(f"ImageNet at {root} has no {split}/ folder; {_layout_help(root)}")
    return folders


def _classes(folder: Path) -> list[str]:
    """The sorted class folders of one split (torchvision's find_classes)."""
    try:
        return find_classes(folder)[0]
    except FileNotFoundError:
        loose = sum(1 for name in os.listdir(folder) if name.lower().endswith(EXTENSIONS))
        hint = f" ({loose} images lie directly in it: sort them into <wnid>/ folders)" if loose else ""
        raise DataError(f"ImageNet {folder} has no class folders{hint}; {_layout_help(folder.parent)}") from None


def _choose_wnids(root: Path, train: list[str], val: list[str], subset: int | None) -> list[str]:
    """The wnids to use: all (checked against ILSVRC-2012), or the first `subset` of train's (present in val)."""
    if subset is None:
        if len(train) != ILSVRC2012_CLASSES:
            raise DataError(
                f"ImageNet at {root} has {len(train)} classes in train/, not ILSVRC-2012's {ILSVRC2012_CLASSES}; "
                f"for a partial copy pass --subset N to use its first N classes, or point --data at a full copy"
            )
        if train != val:
            only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
            raise DataError(
                f"ImageNet at {root}: train/ and val/ hold different classes ({len(only_train)} only in train/"
                f"{', e.g. ' + only_train[0] if only_train else ''}; {len(only_val)} only in val/"
                f"{', e.g. ' + only_val[0] if only_val else ''}); re-extract val/ or pass --subset N"
            )
        return train
    if not 1 <= subset <= len(train):
        raise UserError(f"--subset {subset} must be between 1 and the {len(train)} classes in {root}/train")
    wnids = train[:subset]
    if missing := sorted(set(wnids) - set(val)):
        raise DataError(
            f"ImageNet at {root}: {len(missing)} of the first {subset} train/ classes have no val/ folder "
            f"(e.g. {missing[0]}); re-extract val/ or pass a smaller --subset"
        )
    return wnids


def _list_split(folder: Path, wnids: list[str]) -> SplitFiles:
    """The images of `wnids` in one split folder, via torchvision's make_dataset (sorted, labels = wnid index)."""
    try:
        items = make_dataset(folder, {w: i for i, w in enumerate(wnids)}, extensions=EXTENSIONS)
    except FileNotFoundError as exc:  # a class folder without images
        raise DataError(f"ImageNet {folder}: {_one_line(exc)}; remove the empty class or restore its images") from None
    prefix = len(os.path.join(folder, ""))
    names = np.array([os.fsencode(path[prefix:]) for path, _ in items], dtype=bytes)
    return SplitFiles(folder, names, torch.tensor([label for _, label in items], dtype=torch.int64))


def root_of(config: ImageNetConfig) -> Path:
    """The ImageNet root a config names; a DataError saying what to pass when it names none."""
    if not config.data:
        raise DataError(f"no ImageNet root given: pass --data ROOT ({_layout_help(Path('ROOT'))})")
    return Path(config.data).expanduser()


def discover(config: ImageNetConfig) -> tuple[dict[str, SplitFiles], list[str], dict]:
    """List an ImageNet root: its split files, the wnids used and the `source` record (JSON-able)."""
    root = root_of(config)
    folders = _split_folders(root)
    wnids = _choose_wnids(root, _classes(folders["train"]), _classes(folders["val"]), config.subset)
    files = {split: _list_split(folder, wnids) for split, folder in folders.items()}
    # torchvision's prepared ImageNet root holds meta.bin (wnid -> names, val wnids) beside the folders.
    kind = "torchvision" if (root / META_FILE).is_file() else "imagefolder"
    listing = hashlib.sha256()
    for split in SPLITS:
        listing.update(b"\0".join(files[split].names.tolist()) + b"\1" + files[split].labels.numpy().tobytes())
    source = {
        "kind": kind,
        "root": str(root.resolve()),
        "classes": len(wnids),
        "train": len(files["train"]),
        "val": len(files["val"]),
        "subset": config.subset,
        # Names and labels only: hashing ~140 GB of pixels is not practical. Under "sha256" too, the key the run
        # cache compares for every dataset.
        "listing_sha256": listing.hexdigest(),
        "sha256": listing.hexdigest(),
    }
    sizes = {split: len(files[split]) for split in SPLITS}
    if config.subset is None and sizes != ILSVRC2012_SIZES:
        source["found"] = {"classes": len(wnids), **sizes}
        warnings.warn(
            f"ImageNet at {root} has {sizes['train']:,} train / {sizes['val']:,} val images, not ILSVRC-2012's "
            f"{ILSVRC2012_SIZES['train']:,} / {ILSVRC2012_SIZES['val']:,}; its errors are not the paper's",
            DataWarning,
            stacklevel=3,
        )
    return files, wnids, source


def class_names(root: str | os.PathLike) -> dict[str, tuple[str, ...]]:
    """wnid -> human-readable names from a torchvision root's meta.bin; {} for a plain ImageFolder root."""
    if not (Path(root) / META_FILE).is_file():
        return {}
    try:
        return load_meta_file(root)[0]
    except Exception as exc:
        raise DataError(
            f"cannot read {Path(root) / META_FILE} ({_one_line(exc)}); delete it to use the folders alone"
        ) from None


def decode(path: str) -> torch.Tensor:
    """One image as uint8 [3, H, W] RGB (grey and CMYK JPEGs converted); a one-line DataError naming it."""
    try:
        return decode_image(read_file(path), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode image {path} ({_one_line(exc)}); remove or replace it") from None


# --- Sec. 3.4's augmentation ------------------------------------------------------------------------


def crop_offset(u: float, length: int, crop: int) -> int:
    """A uniform offset in [0, length - crop] from u in [0, 1): the draw is made before the size is known."""
    return min(int(u * (length - crop + 1)), length - crop)


def scale_crop_flip(image: torch.Tensor, side: int, u: tuple[float, float], flip: bool, crop: int) -> torch.Tensor:
    """Resize uint8 `image` [3, H, W] to shorter side `side`, take the crop x crop window at the offsets drawn
    as `u` (row, column), mirrored where `flip`; cropping the flipped image is the same draw, mirrored."""
    resized = TF.resize(image, side, antialias=True)  # aspect kept: the shorter side becomes `side`
    h, w = resized.shape[-2:]
    top, left = crop_offset(u[0], h, crop), crop_offset(u[1], w, crop)
    out = resized[:, top : top + crop, left : left + crop]
    return out.flip(-1) if flip else out


def pca_shift(alpha: torch.Tensor) -> torch.Tensor:
    """AlexNet's colour shift per image, eigvec @ (alpha * eigval): [B, 3] alphas -> [B, 3] RGB offsets."""
    eigval, eigvec = PCA_EIGVAL.to(alpha.device), PCA_EIGVEC.to(alpha.device)
    return (alpha * eigval) @ eigvec.T


def _share(batch_size: int, rank: int, world_size: int) -> slice:
    return slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)


class TrainImageBatches(Dataset):
    """Map-style: item `iteration` is this rank's slice of global batch `iteration`, decoded and augmented.

    Batch i holds positions [i*B, (i+1)*B) of an endless stream made of one seeded permutation of the
    training set per pass (as cifar10.TrainBatches); each position's scale, crop offset, flip and colour
    alphas are drawn from a generator seeded by (seed, i). A DataLoader worker builds whole batches, so
    any number of workers yields the same batches in the same order.
    """

    def __init__(
        self,
        files: SplitFiles,
        batch_size: int,
        seed: int,
        *,
        scale: tuple[int, int] = (256, 480),
        crop: int = 224,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size % world_size:
            raise UserError(f"batch size {batch_size} must divide evenly over {world_size} devices")
        self.files, self.batch_size, self.seed, self.scale, self.crop = files, batch_size, seed, scale, crop
        self.share = _share(batch_size, rank, world_size)
        self._perms: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(_stream_seed(self.seed, _ORDER, epoch))
            self._perms = {epoch: torch.randperm(len(self.files), generator=g)}  # keep one pass in memory
        return self._perms[epoch]

    def draws(self, iteration: int) -> dict:
        """Image indices and augmentation draws of one iteration, restricted to this rank's slice."""
        n, b = len(self.files), self.batch_size
        positions = torch.arange(iteration * b, (iteration + 1) * b)
        epochs, offsets = positions // n, positions % n
        index = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():
            mask = epochs == epoch
            index[mask] = self._permutation(epoch)[offsets[mask]]
        g = torch.Generator().manual_seed(_stream_seed(self.seed, _DRAWS, iteration))
        # Drawn for the whole global batch, then sliced: an image's draws do not depend on the device count.
        side = torch.randint(self.scale[0], self.scale[1] + 1, (b,), generator=g)
        u = torch.rand(b, 2, generator=g, dtype=torch.float64)  # crop offsets as fractions of the free range
        flip = torch.randint(0, 2, (b,), generator=g).bool()
        alpha = torch.randn(b, 3, generator=g) * PCA_STD  # drawn with colour off too: the other draws stay the same
        s = self.share
        return {"index": index[s], "side": side[s], "u": u[s], "flip": flip[s], "alpha": alpha[s]}

    def __getitem__(self, iteration: int) -> dict:
        d = self.draws(iteration)
        try:
            x = torch.stack(
                [
                    scale_crop_flip(decode(self.files.path(i)), side, u, flip, self.crop)
                    for i, side, u, flip in zip(
                        d["index"].tolist(), d["side"].tolist(), d["u"].tolist(), d["flip"].tolist(), strict=True
                    )
                ]
            )
        except DataError as exc:
            # Raised in the main process (on_after_batch_transfer): from a worker it would arrive as a
            # multi-line traceback wrapped by the DataLoader instead of one line.
            return {"split": "train", "error": str(exc)}
        return {"split": "train", "x": x, "y": self.files.labels[d["index"]], "alpha": d["alpha"]}


class IterationSampler(Sampler):
    """Yields iterations start..stop-1, with start read when iteration begins (the trainer's restored step)."""

    def __init__(self, stop: int, start_fn=lambda: 0):
        self.stop, self.start_fn = stop, start_fn

    def __len__(self) -> int:
        return self.stop  # one Lightning "epoch" is the whole run; a resumed iterator yields fewer

    def __iter__(self):
        return iter(range(self.start_fn(), self.stop))


class CenterCropBatches(Dataset):
    """Map-style: item k is chunk k of `index`, each image's centre crop after a shorter-side resize."""

    def __init__(self, files: SplitFiles, split: str, index: torch.Tensor, batch_size: int, crop: int = 224):
        self.files, self.split, self.chunks = files, split, index.split(batch_size)
        # The `center` protocol (shorter side 256, centre 224 crop), scaled alike for another crop size.
        center = PROTOCOLS["center"]
        self.protocol = (
            center if crop == center.crop else replace(center, short_sides=(round(crop * 256 / 224),), crop=crop)
        )

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> dict:
        index = self.chunks[k]
        try:
            x = torch.stack([views(decode(self.files.path(i)), self.protocol)[0] for i in index.tolist()])
        except DataError as exc:
            return {"split": self.split, "error": str(exc)}  # raised in the main process, as one line
        return {"split": self.split, "x": x, "y": self.files.labels[index]}


# --- the datamodule ---------------------------------------------------------------------------------


class ImageNetDataModule(pl.LightningDataModule):
    """ILSVRC-2012 (Sec. 3.4): decoded and augmented by DataLoader workers, normalised on the device."""

    def __init__(
        self, config: ImageNetConfig, *, batch_size: int, max_iters: int, seed: int, channels_last: bool = True
    ):
        super().__init__()
        if config.mean not in ("per-pixel", "per-channel"):
            raise UserError(f"unknown mean {config.mean!r}: use per-pixel (the paper's) or per-channel")
        low, high = config.scale
        if not config.crop <= low <= high:
            raise UserError(f"--scale {low},{high} must satisfy {config.crop} (the crop) <= low <= high")
        if config.workers < 0 or config.eval_batch_size <= 0:
            raise UserError("workers must be >= 0 and the evaluation batch size positive")
        self.config, self.batch_size, self.max_iters, self.seed = config, batch_size, max_iters, seed
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.files: dict[str, SplitFiles] = {}
        self.classes: tuple[str, ...] = ()  # the wnids used, sorted; labels index into them
        self.names: dict[str, tuple[str, ...]] = {}  # wnid -> names, where the root has torchvision's meta.bin
        self.source: dict = {}
        self.val_indices = None  # no hold-out: ILSVRC's val set is the evaluation set
        self._mean: torch.Tensor | None = None  # see `mean`
        self._on_device: dict[str, torch.Tensor] = {}

    # -- set-up -------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Check the root's layout (rank 0): nothing is downloaded or decoded ahead."""
        _split_folders(root_of(self.config))

    def setup(self, stage: str | None = None) -> None:
        if self.files:
            return
        self.files, wnids, self.source = discover(self.config)
        self.classes = tuple(wnids)
        self.names = class_names(root_of(self.config))

    @property
    def mean(self) -> torch.Tensor:
        """The per-pixel mean image ([3, crop, crop] in [0, 1]): restored from a checkpoint, else computed at
        first use. Not in setup: Lightning restores a resumed run's datamodule state after setup, so computing
        it there would decode the sample again on every resume."""
        if self._mean is None:
            if not self.files:
                raise RuntimeError("ImageNetDataModule.mean before setup(): the mean needs the training files")
            self._mean = self._mean_image()
        return self._mean

    def _mean_image(self) -> torch.Tensor:
        """The per-pixel mean (3 x crop x crop, in [0, 1]) of a fixed sample's centre crops."""
        train = self.files["train"]
        g = torch.Generator().manual_seed(_stream_seed(0, _MEAN, 0))
        sample = torch.randperm(len(train), generator=g)[:MEAN_SAMPLE].sort().values  # sorted: read in folder order
        loader = self._loader(CenterCropBatches(train, "train", sample, self.config.eval_batch_size, self.config.crop))
        total = torch.zeros(3, self.config.crop, self.config.crop, dtype=torch.float64)
        # Minutes on real ImageNet, once per run: a bar on a terminal (disable=None), nothing in a job's log.
        with tqdm(total=len(sample), desc="mean image", unit="img", disable=None, leave=False) as bar:
            for batch in loader:
                if "error" in batch:
                    raise DataError(batch["error"])
                total += batch["x"].sum(dim=0, dtype=torch.float64)
                bar.update(len(batch["x"]))
        return (total / len(sample) / 255).float()

    # -- loaders ------------------------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: Dataset, sampler: Sampler | None = None, persistent: bool = False) -> DataLoader:
        workers = self.config.workers
        return DataLoader(
            dataset,
            batch_size=None,  # each item is a whole batch, built by one worker
            sampler=sampler,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=persistent and workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        batches = TrainImageBatches(
            self.files["train"],
            self.batch_size,
            self.seed,
            scale=self.config.scale,
            crop=self.config.crop,
            rank=rank,
            world_size=world,
        )
        start = IterationSampler(self.max_iters, lambda: self.trainer.global_step if self.trainer is not None else 0)
        # The sampler runs in the main process, so a resumed run's start is read after Lightning restores it;
        # this needs Trainer(use_distributed_sampler=False), which shards nothing: the dataset slices by rank.
        return self._loader(batches, start)

    def train_batches_after(self, start: int, count: int) -> DataLoader:
        """Training batches `start`..`start + count - 1` of the same stream (scale, crop, flip and colour drawn
        alike): precise BN's images after the last iteration, a pure function of the seed."""
        rank, world = self._rank()
        c = self.config
        batches = TrainImageBatches(
            self.files["train"], self.batch_size, self.seed, scale=c.scale, crop=c.crop, rank=rank, world_size=world
        )
        return self._loader(batches, IterationSampler(start + count, lambda: start))

    def val_dataloader(self) -> list[DataLoader]:
        """ILSVRC-2012 val with the `center` protocol, as the "test" split (see eval_splits)."""
        rank, world = self._rank()
        index = torch.arange(rank, len(self.files["val"]), world)
        dataset = CenterCropBatches(self.files["val"], "test", index, self.config.eval_batch_size, self.config.crop)
        return [self._loader(dataset, persistent=True)]  # evaluated many times: keep its workers

    @property
    def eval_splits(self) -> list[str]:
        # For ImageNet the "test" curve is the ILSVRC-2012 val set, as in the paper (Fig. 4, Tables 2-3 report
        # val error), so the LightningModule logs test/error and test/top5_error unchanged.
        return ["test"]

    # -- on the device ------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """To float in [0, 1], the colour shift (train), minus the mean: `(x, y, split)`."""
        if "error" in batch:
            raise DataError(batch["error"])
        split, images = batch["split"], batch["x"]
        x = images.float().div_(255)
        if split == "train" and self.config.color:
            # Not clipped to [0, 1] (as fb.resnet.torch). A constant per channel: applied after the resize, crop
            # and flip, it equals (up to uint8 rounding) applying it before. No std division: the paper only
            # subtracts the mean.
            x += pca_shift(batch["alpha"].float())[:, :, None, None]
        x -= self._mean_on(images.device)
        return x.contiguous(memory_format=self.memory_format), batch["y"], split

    def _mean_on(self, device: torch.device) -> torch.Tensor:
        """The mean that training subtracts ([3, crop, crop], or [3, 1, 1] for per-channel), on `device`."""
        key = str(device)
        if key not in self._on_device:
            # DEVIATION (paper: per-pixel mean only): "per-channel" subtracts the mean image's channel means.
            mean = self.mean if self.config.mean == "per-pixel" else self.mean.mean(dim=(1, 2), keepdim=True)
            self._on_device = {key: mean.to(device)}
        return self._on_device[key]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Crops of the training size on the 0..255 scale (uint8, or float as evaluation.score passes them),
        normalised as training does (no colour shift): for the center and 10crop protocols."""
        if tuple(x.shape[-2:]) != tuple(self.mean.shape[-2:]):
            raise UserError(
                f"the per-pixel mean is {self.mean.shape[-1]}x{self.mean.shape[-2]}; "
                f"a {x.shape[-1]}x{x.shape[-2]} input needs normalize_any_size"
            )
        return x.float() / 255 - self._mean_on(x.device)

    def normalize_any_size(self, x: torch.Tensor) -> torch.Tensor:
        """Images of any size on the 0..255 scale minus the mean image's channel means (multiscale protocol)."""
        # DEVIATION (paper: the per-pixel mean, and whole images at five scales, not saying how the two meet):
        # the mean is a crop-sized image and cannot be subtracted from whole images at other sizes, so
        # multi-scale testing subtracts its per-channel means.
        return x.float() / 255 - self.mean.to(x.device).mean(dim=(1, 2), keepdim=True)

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Stored in checkpoints so an evaluation normalises exactly as training did."""
        mean = self.mean.cpu() if self._mean is not None or self.files else None  # None only before setup
        return {
            "mean": mean,
            "mean_kind": self.config.mean,
            "source": self.source,
            "classes": list(self.classes),
            "val_indices": None,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the trained mean image (then never computed); the classes must match."""
        if self.classes and state.get("classes") and list(self.classes) != list(state["classes"]):
            raise DataError(
                f"the checkpoint was trained on {len(state['classes'])} classes, not the {len(self.classes)} of "
                f"{self.config.data} (or in another order); pass the --data and --subset it was trained with"
            )
        if state.get("mean") is not None:
            self._mean = state["mean"].float()
            self._on_device = {}
