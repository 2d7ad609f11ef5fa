"""The datasets, one entry each in one registry: CIFAR-10 (Sec. 4.2) and ImageNet (Sec. 3.4).

A run's spec names its dataset (`TrainSpec.dataset`) and holds that dataset's config; this registry
builds the LightningDataModule from the spec and tells the run cache which copy of the data it is.
"""

import importlib
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


def _datamodule(module: str, name: str) -> Callable:
    """A factory of the data module `module.name`: every dataset's module takes the same arguments."""

    def build(spec):
        cls = getattr(importlib.import_module(module), name)  # imported on use: ImageNet's pulls in its decoders
        return cls(
            spec.data,
            batch_size=spec.batch_size,
            max_iters=spec.schedule.max_iters,
            seed=spec.seed,
            channels_last=spec.channels_last,
        )

    return build


def _cifar10_sha256(config: DataConfig) -> str:
    from resnet_repro.data.sources import load_cifar10  # a cache hit: well under a second

    return load_cifar10(config.data, config.root, full=config.full, progress=False).source["sha256"]


def _imagenet_sha256(config: ImageNetConfig) -> str:
    from resnet_repro.data.imagenet import discover

    return discover(config)[2]["sha256"]


DATASETS = {
    "cifar10": Dataset(
        "cifar10", "cifar", DataConfig, _datamodule("resnet_repro.data.cifar10", "CIFAR10DataModule"), _cifar10_sha256
    ),
    "imagenet": Dataset(
        "imagenet",
        "imagenet",
        ImageNetConfig,
        _datamodule("resnet_repro.data.imagenet", "ImageNetDataModule"),
        _imagenet_sha256,
    ),
}


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def build_datamodule(spec):
    """The LightningDataModule a spec trains on."""
    return get_dataset(spec.dataset).datamodule(spec)
