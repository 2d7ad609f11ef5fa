"""CIFAR-10 for Sec. 4.2: the whole set resident on the training device, augmented in batches there.

The sampler yields only indices and augmentation draws (a few hundred bytes per step); pixels never
leave the device. Every draw is a pure function of (seed, iteration), so a resumed run sees exactly
the batches an uninterrupted run would have seen, whatever Lightning's loop restores.
"""

from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from resnet_repro.data.sources import CifarArrays, load_cifar10
from resnet_repro.errors import UserError

PAD = 4  # Sec. 4.2: "4 pixels are padded on each side, and a 32x32 crop is randomly sampled"
SIZE = 32


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is preprocessed."""

    data: str | None = None  # path (torchvision root, ImageFolder dir or archive); None: $RESNET_REPRO_DATA or download
    root: str | None = None  # cache root; None: ~/.cache/resnet-repro
    val_split: int = 0  # hold out this many training images (the paper's 45k/5k protocol: 5000)
    normalize: str = "per-pixel-mean"  # Sec. 4.2; "per-channel" = mean/std per channel (common, not the paper's)
    augment: bool = True
    eval_batch_size: int = 1000
    full: bool = True  # require all 60,000 images; False only for tests and tiny runs


def _stream_seed(seed: int, stream: int, index: int) -> int:
    """A distinct 63-bit generator seed per (run seed, stream, index)."""
    return (seed * 1_000_003 + stream * 7_919 + index * 104_729 + 12_345) % (2**63 - 1)


class TrainBatches(IterableDataset):
    """Yields, for iterations start..stop-1, this rank's share of each global batch.

    Batch i holds positions [i*B, (i+1)*B) of an endless stream made of one seeded permutation of the
    training set per pass, so passes wrap like Caffe's data layer (no dropped or short batches).
    """

    def __init__(
        self,
        n_images: int,
        batch_size: int,
        seed: int,
        stop: int,
        rank: int = 0,
        world_size: int = 1,
        start_fn=lambda: 0,
    ):
        if batch_size % world_size:
            raise UserError(f"batch size {batch_size} must divide evenly over {world_size} devices")
        self.n, self.batch_size, self.seed, self.stop = n_images, batch_size, seed, stop
        self.rank, self.world_size = rank, world_size
        self.start_fn = start_fn  # read when iteration begins: the trainer's (possibly restored) step
        self._perms: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.stop  # one Lightning "epoch" is the whole run; a resumed iterator yields fewer

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(_stream_seed(self.seed, 1, epoch))
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # keep one pass in memory
        return self._perms[epoch]

    def batch(self, iteration: int) -> dict:
        """The draws for one iteration, restricted to this rank's slice of the global batch."""
        positions = torch.arange(iteration * self.batch_size, (iteration + 1) * self.batch_size)
        epochs, offsets = positions // self.n, positions % self.n
        index = torch.empty_like(positions)
        # The passes this batch spans, in plain integers: no tensor is read back to the host per step.
        for epoch in range(
            iteration * self.batch_size // self.n, ((iteration + 1) * self.batch_size - 1) // self.n + 1
        ):
            mask = epochs == epoch
            index[mask] = self._permutation(epoch)[offsets[mask]]
        g = torch.Generator().manual_seed(_stream_seed(self.seed, 2, iteration))
        crop = torch.randint(0, 2 * PAD + 1, (self.batch_size, 2), generator=g)
        flip = torch.randint(0, 2, (self.batch_size,), generator=g).bool()
        share = slice(
            self.rank * self.batch_size // self.world_size, (self.rank + 1) * self.batch_size // self.world_size
        )
        return {"split": "train", "index": index[share], "crop": crop[share], "flip": flip[share]}

    def __iter__(self):
        for iteration in range(self.start_fn(), self.stop):
            yield self.batch(iteration)


class EvalBatches(IterableDataset):
    """Yields index chunks covering this rank's share of an evaluation set once."""

    def __init__(self, split: str, n_images: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.split, self.index = split, torch.arange(rank, n_images, world_size)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch_size)

    def __iter__(self):
        for chunk in self.index.split(self.batch_size):
            yield {"split": self.split, "index": chunk}


def crop_and_flip(images: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor, pad: int = PAD) -> torch.Tensor:
    """Random 32x32 crops of zero-padded images, mirrored where `flip`, in one batched gather.

    Args:
        images: float [B, C, H, W] in pixel space (the padding is zero pixels, before mean subtraction).
        crop: int [B, 2] top-left (row, col) offsets into the padded image, each in [0, 2*pad].
        flip: bool [B] horizontal flips.
    """
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    # Every HxW window of the padded image, as a view: [B, C, 2*pad+1, 2*pad+1, H, W]; pick one per image.
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)
    crops = windows[torch.arange(b, device=images.device), :, crop[:, 0], crop[:, 1]]
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


class CIFAR10DataModule(pl.LightningDataModule):
    """CIFAR-10 (Sec. 4.2): decoded once, resident on the device, augmented there in batches."""

    def __init__(
        self,
        config: DataConfig,
        *,
        batch_size: int,
        max_iters: int,
        seed: int,
        arrays: CifarArrays | None = None,
        channels_last: bool = True,
    ):
        super().__init__()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if config.normalize not in ("per-pixel-mean", "per-channel"):
            raise UserError(
                f"unknown normalisation {config.normalize!r}: use per-pixel-mean (the paper's) or per-channel"
            )
        self.config, self.batch_size, self.max_iters, self.seed = config, batch_size, max_iters, seed
        self.arrays = arrays
        self._split: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.val_indices: torch.Tensor | None = None
        self.source: dict = {}

    # -- set-up -------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Decode the source into the uint8 cache once (rank 0)."""
        if self.arrays is None and not self._split:
            load_cifar10(self.config.data, self.config.root, full=self.config.full)

    def setup(self, stage: str | None = None) -> None:
        if self._split:
            return
        arrays = self.arrays or load_cifar10(self.config.data, self.config.root, full=self.config.full, progress=False)
        self.source = dict(arrays.source)
        train_x, train_y = arrays.train_images, arrays.train_labels
        if self.config.val_split:
            if not 0 < self.config.val_split < len(train_x):
                raise UserError(f"--val-split {self.config.val_split} must be between 1 and {len(train_x) - 1}")
            # One fixed hold-out for every run (the paper's single 45k/5k split), whatever the run's seed;
            # excluded from training and from the mean image.
            perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(_stream_seed(0, 3, 0)))
            self.val_indices = perm[: self.config.val_split].sort().values
            keep = perm[self.config.val_split :].sort().values
            self._split["val"] = (train_x[self.val_indices], train_y[self.val_indices])
            train_x, train_y = train_x[keep], train_y[keep]
        self._split["train"] = (train_x, train_y)
        self._split["test"] = (arrays.test_images, arrays.test_labels)
        pixels = train_x.float().div_(255)
        if self.config.normalize == "per-pixel-mean":
            # Sec. 4.2: "the per-pixel mean subtracted": a 3x32x32 mean image of the training images used.
            self.mean = pixels.mean(dim=0)
            self.std = torch.ones(3, 1, 1)
        else:
            # DEVIATION (paper: per-pixel mean only): optional per-channel mean/std, off by default.
            self.mean = pixels.mean(dim=(0, 2, 3))[:, None, None]
            self.std = pixels.std(dim=(0, 2, 3))[:, None, None]

    # -- loaders ------------------------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        batches = TrainBatches(
            len(self._split["train"][0]),
            self.batch_size,
            self.seed,
            self.max_iters,
            rank,
            world,
            start_fn=lambda: self.trainer.global_step if self.trainer is not None else 0,
        )
        return DataLoader(batches, batch_size=None)

    def train_batches_after(self, start: int, count: int) -> DataLoader:
        """Training batches `start`..`start + count - 1` of the same stream (augmented alike): precise BN's
        images after the last iteration, so they are fresh draws and a pure function of the seed."""
        rank, world = self._rank()
        n = len(self._split["train"][0])
        return DataLoader(
            TrainBatches(n, self.batch_size, self.seed, start + count, rank, world, start_fn=lambda: start),
            batch_size=None,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        rank, world = self._rank()
        return DataLoader(
            EvalBatches(split, len(self._split[split][0]), self.config.eval_batch_size, rank, world), batch_size=None
        )

    def val_dataloader(self) -> list[DataLoader]:
        """The test set (the paper's curves are test error), then the held-out validation set if any."""
        return [self._eval_loader(split) for split in self.eval_splits]

    @property
    def eval_splits(self) -> list[str]:
        return ["test", "val"] if self.config.val_split else ["test"]

    # -- on the device ------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Gather the batch from the resident uint8 set, augment it (train only) and normalise it."""
        split, index = batch["split"], batch["index"]
        images, labels = self._resident(split, index.device)
        x = images[index].float().div_(255)
        if split == "train" and self.config.augment:
            x = crop_and_flip(x, batch["crop"], batch["flip"])
        mean, std = self._normalisation_on(index.device)
        x = (x - mean) / std
        return x.contiguous(memory_format=self.memory_format), labels[index], split

    def _resident(self, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self._split[split]
        if images.device != device:  # first batch on this device: move the whole split once
            images, labels = images.to(device), labels.to(device)
            self._split[split] = (images, labels)
        return images, labels

    def _normalisation_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean.device != device:
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self.mean, self.std

    def state_dict(self) -> dict:
        """Stored in checkpoints so an evaluation can normalise exactly as training did."""
        return {
            "mean": self.mean.cpu(),
            "std": self.std.cpu(),
            "source": self.source,
            "val_indices": None if self.val_indices is None else self.val_indices.tolist(),
        }
