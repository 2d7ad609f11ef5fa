"""The datasets, one entry each in one registry: CIFAR-10 (Sec. 4.2) and ImageNet (Sec. 3.4).

A run's spec names its dataset (`TrainSpec.dataset`) and holds that dataset's config; this registry
builds the LightningDataModule from the spec and tells the run cache which copy of the data it is.
"""

from collections.abc import Callable
from dataclasses import dataclass

from resnet_repro.data.cifar10 import DataConfig
from resnet_repro.data.imagenet import ImageNetConfig
from resnet_repro.errors import UserError


@dataclass(frozen=True)
class Dataset:
    """A dataset: the model family it trains, its config class, and how to build its data module."""

    name: str
    family: str  # models.ModelInfo.family: "cifar" or "imagenet"
    config: type
    datamodule: Callable  # (spec) -> LightningDataModule
    sha256: Callable  # (config) -> the content hash the run cache compares


def _cifar10_module(spec):
    from resnet_repro.data.cifar10 import CIFAR10DataModule

    return CIFAR10DataModule(
        spec.data,
        batch_size=spec.batch_size,
        max_iters=spec.schedule.max_iters,
        seed=spec.seed,
        channels_last=spec.channels_last,
    )


def _cifar10_sha256(config: DataConfig) -> str:
    from resnet_repro.data.sources import load_cifar10  # a cache hit: well under a second

    return load_cifar10(config.data, config.root, full=config.full, progress=False).source["sha256"]


def _imagenet_module(spec):
    from resnet_repro.data.imagenet import ImageNetDataModule

    return ImageNetDataModule(
        spec.data,
        batch_size=spec.batch_size,
        max_iters=spec.schedule.max_iters,
        seed=spec.seed,
        channels_last=spec.channels_last,
    )


def _imagenet_sha256(config: ImageNetConfig) -> str:
    from resnet_repro.data.imagenet import discover

    return discover(config)[2]["sha256"]


DATASETS = {
    "cifar10": Dataset("cifar10", "cifar", DataConfig, _cifar10_module, _cifar10_sha256),
    "imagenet": Dataset("imagenet", "imagenet", ImageNetConfig, _imagenet_module, _imagenet_sha256),
}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def build_datamodule(spec):
    """The LightningDataModule a spec trains on."""
    return get_dataset(spec.dataset).datamodule(spec)
