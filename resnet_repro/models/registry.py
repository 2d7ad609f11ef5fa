"""One registry of the paper's networks (Sec. 3.3, 4.2, Table 1): the only way to build one by name.

Names mirror the paper's row labels: `plain20`..`plain110`, `resnet20`..`resnet1202` (CIFAR-10),
`plain18`/`resnet18`..`plain152`/`resnet152` (ImageNet). Any other 6n+2 CIFAR depth builds by name
too (`resnet8`, `plain14`) without being listed. Depths 50 and 152 are both 6n+2 and Table 1 depths;
their names mean the ImageNet nets (build the CIFAR ones with `CifarResNet(50)`).
Variants are keyword arguments: `build_model("resnet34", shortcut="B")`.
"""

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from resnet_repro.errors import UnknownModelError, UserError
from resnet_repro.models import cifar, imagenet

FAMILIES = ("cifar", "imagenet")

_NAME = re.compile(r"(plain|resnet)([1-9][0-9]*)")


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a name without building the net."""

    name: str
    family: str  # "cifar" or "imagenet"
    depth: int  # weighted layers, as the paper counts them
    residual: bool
    shortcut: str | None  # default shortcut option; None for a plain net
    input_size: int  # the paper's input side: 32 or 224
    num_classes: int
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(info: ModelInfo) -> ModelInfo:
    """Add `info` to the registry; a name can be registered only once."""
    if info.name in _REGISTRY:
        raise ValueError(f"model {info.name!r} is already registered")
    _REGISTRY[info.name] = info
    return info


def list_models(family: str | None = None) -> list[str]:
    """Registered names, CIFAR then ImageNet, by depth, plain before residual."""
    if family is not None and family not in FAMILIES:
        raise UserError(f"unknown model family {family!r}: valid are {', '.join(FAMILIES)}")
    return [name for name, info in _REGISTRY.items() if family in (None, info.family)]


def model_info(name: str) -> ModelInfo:
    """The record for a registered name or any 6n+2 CIFAR name; UnknownModelError otherwise."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    match = _NAME.fullmatch(name)
    if match:
        depth = int(match[2])
        if depth >= 8 and (depth - 2) % 6 == 0:
            return _cifar_info(depth, residual=match[1] == "resnet")
    raise UnknownModelError(
        f"unknown model {name!r}: CIFAR-10 nets are plain<d> or resnet<d> with d = 6n+2 "
        f"(8, 14, 20, 26, 32, ...; the paper's: {', '.join(map(str, cifar.PAPER_DEPTHS))}); "
        f"ImageNet nets use d in {', '.join(map(str, imagenet.STAGE_BLOCKS))}; "
        "`resnet-repro models` lists them"
    )


def build_model(name: str, **kwargs) -> nn.Module:
    """Build the net called `name`; keyword arguments select variants (shortcut, ...)."""
    info = model_info(name)
    if not info.residual:
        if kwargs.get("shortcut") is not None:
            raise UserError(
                f"{name} is a plain net (no shortcuts): shortcut options A/B/C apply only to "
                f"resnet names, e.g. {name.replace('plain', 'resnet')}"
            )
        kwargs.pop("shortcut", None)
    elif "shortcut" in kwargs and kwargs["shortcut"] is None:
        raise UserError(
            f"{name} needs a shortcut option A, B or C; the net without shortcuts is {name.replace('resnet', 'plain')}"
        )
    valid = [p for p in inspect.signature(info.builder).parameters if info.residual or p != "shortcut"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise UserError(f"{name} does not take {', '.join(unknown)}: valid keyword arguments are {', '.join(valid)}")
    return info.builder(**kwargs)


def _cifar_info(depth: int, residual: bool) -> ModelInfo:
    default = "A" if residual else None

    def build(shortcut: str | None = default, num_classes: int = 10) -> nn.Module:
        return cifar.CifarResNet(depth, shortcut, num_classes)

    name = f"{'resnet' if residual else 'plain'}{depth}"
    return ModelInfo(name, "cifar", depth, residual, default, 32, 10, build)


def _imagenet_info(depth: int, residual: bool) -> ModelInfo:
    default = imagenet.default_shortcut(depth) if residual else None
    if depth >= 50:

        def build(shortcut: str | None = default, num_classes: int = 1000, stride_in_1x1: bool = True) -> nn.Module:
            return imagenet.ImageNetResNet(depth, shortcut, num_classes, stride_in_1x1)

    else:

        def build(shortcut: str | None = default, num_classes: int = 1000) -> nn.Module:
            return imagenet.ImageNetResNet(depth, shortcut, num_classes)

    name = f"{'resnet' if residual else 'plain'}{depth}"
    return ModelInfo(name, "imagenet", depth, residual, default, 224, 1000, build)


def _register_paper_models() -> None:
    for depth in cifar.PAPER_DEPTHS:
        if depth <= 110:  # plain-110 is in Fig. 6 (caption); the paper has no plain-1202
            register_model(_cifar_info(depth, residual=False))
        register_model(_cifar_info(depth, residual=True))
    for depth in imagenet.STAGE_BLOCKS:
        # The paper trains plain-18/34 only; the deeper plain nets come free with one definition.
        register_model(_imagenet_info(depth, residual=False))
        register_model(_imagenet_info(depth, residual=True))


_register_paper_models()
