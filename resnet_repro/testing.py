"""Testing a trained net: load the weights (our checkpoints, torchvision's state dicts), score ILSVRC val under
one of the paper's protocols (evaluation.py) and record the errors beside the run; `resnet-repro evaluate`
and the artifacts' runner call this.
"""

import io
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from resnet_repro.errors import UserError
from resnet_repro.evaluation import TRAIN_CROP, get_protocol, score_split, top_k_errors
from resnet_repro.files import write_bytes, write_json
from resnet_repro.models import build_model, from_torchvision_state_dict, model_info
from resnet_repro.models.imagenet import STAGE_BLOCKS

if TYPE_CHECKING:
    from resnet_repro.data.imagenet import SplitFiles

# --- the weights to test --------------------------------------------------------------------------------

# How torchvision's ImageNet weights were trained: RGB in [0, 1], minus this mean, divided by this std.
TORCHVISION_MEAN, TORCHVISION_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Bench:
    """A test bench: a net ready to test, the val images it is tested on, its inputs normalised as trained."""

    model: nn.Module
    name: str  # the model name, e.g. resnet50
    weights: str  # "checkpoint" (a `resnet-repro train` run's) or "torchvision" (a torchvision state dict)
    iteration: int | None  # the checkpoint's global step; None for torchvision weights
    crop: int  # the crop it was trained at: the protocols' geometry is scaled to it
    files: "SplitFiles"  # the val split
    classes: tuple[str, ...]  # the wnids the labels index
    source: dict  # data.imagenet.discover's record of the root
    normalize: Callable  # for crops of the training size (center, 10crop)
    normalize_any_size: Callable  # for whole images (multiscale)
    normalization: str  # the above, in words
    eval_batch_size: int  # views per batch the run's own evaluations used
    workers: int  # DataLoader worker processes


def _reason(exc: BaseException) -> str:
    """An exception's first sentence, short: torch.load's messages run to paragraphs."""
    text = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:120]
    if text.startswith("Weights only load failed"):
        return "it holds Python objects besides weights, which are not loaded: they could run code"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _torchvision_name(state: dict) -> str | None:
    """Which torchvision ResNet a state dict holds, from its blocks per stage (None if none of Table 1's)."""
    blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in state)
    depth = next((d for d, stages in STAGE_BLOCKS.items() if stages == blocks and (d >= 50) == bottleneck), None)
    return None if depth is None else f"resnet{depth}"


def _load_weights(net: nn.Module, state: dict, path: Path, model: str, holds: str | None) -> None:
    """Load `state` into `net` strictly; a one-line UserError saying what the file holds when it does not fit."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and own[k].shape != state[k].shape]
    if not (missing or unexpected or reshaped):
        net.load_state_dict(state)
        return
    if holds is not None and holds != model:
        raise UserError(f"{path} holds a {holds}, not a {model}: pass {holds} as MODEL, or the weights of a {model}")
    first = (
        f"{len(missing)} weights missing (e.g. {missing[0]})"
        if missing
        else f"{len(unexpected)} unexpected weights (e.g. {unexpected[0]})"
        if unexpected
        else f"{reshaped[0]} is {tuple(state[reshaped[0]].shape)}, not {tuple(own[reshaped[0]].shape)}"
    )
    raise UserError(f"{path} does not fit {model} ({first}): pass the MODEL these weights are for")


def load_bench(
    checkpoint: Path,
    model: str | None = None,
    *,
    data: str | None = None,
    subset: int | None = None,
    workers: int | None = None,
    stride_on: str | None = None,
) -> Bench:
    """The weights in `checkpoint` (ours or torchvision's) as a net for `model` (None: the checkpoint's), and
    the val split of `data` (None: the root the checkpoint was trained on); one-line UserErrors otherwise.

    Args:
        subset: the first N classes (None: the checkpoint's; for torchvision weights, all 1000).
        workers: DataLoader workers (None: the checkpoint's setting, or data.imagenet's default).
        stride_on: for a bottleneck net's state dict from outside, where each stage's stride-2 sits: "3x3" for
            torchvision's weights (its ResNet v1.5), "1x1" for the paper's placement. Required there: the
            weights have the same shapes either way, so they cannot tell. A run's checkpoint records its net.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: pass a run's checkpoints/last.ckpt or a torchvision ResNet .pth")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the load error, if any, says enough
            warnings.simplefilter("ignore")
            content = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data: no code
    except Exception as exc:
        raise UserError(
            f"{path} is not a readable checkpoint ({_reason(exc)}); pass a run's checkpoints/last.ckpt or a "
            "torchvision ResNet state dict (.pth)"
        ) from None
    if not isinstance(content, dict):
        raise UserError(f"{path} holds a {type(content).__name__}, not a checkpoint's dict of weights")
    if isinstance(content.get("hyper_parameters"), dict) and "spec" in content["hyper_parameters"]:
        if stride_on is not None:
            raise UserError(
                f"--stride-on is for weights from outside; {path} is a run's checkpoint, whose net its spec builds "
                "(the stride on the first 1x1, as the paper)"
            )
        return _our_checkpoint(path, content, model, data, subset, workers)
    if "conv1.weight" in content and "fc.weight" in content and all(torch.is_tensor(v) for v in content.values()):
        return _torchvision_weights(path, content, model, data, subset, workers, stride_on)
    kind = "a Lightning checkpoint without a run spec" if "state_dict" in content else "no ResNet state dict"
    raise UserError(
        f"{path} is {kind} (keys: {', '.join(list(content)[:4])}, ...); pass a `resnet-repro train` run's "
        "checkpoints/last.ckpt or a torchvision ResNet state dict (.pth)"
    )


def _our_checkpoint(path: Path, content: dict, model, data, subset, workers) -> Bench:
    from resnet_repro.data import build_datamodule
    from resnet_repro.module import ClassifierModule
    from resnet_repro.spec import TrainSpec

    try:
        spec = TrainSpec.from_dict(content["hyper_parameters"]["spec"])
    except (TypeError, KeyError, ValueError, UserError) as exc:
        raise UserError(
            f"{path}: its run spec cannot be read ({_reason(exc)}); was it written by another version?"
        ) from None
    if spec.dataset != "imagenet":
        raise UserError(
            f"{path} is a {spec.dataset} checkpoint ({spec.model}); evaluate tests ImageNet nets "
            "(a CIFAR-10 run's test error is in its run.json)"
        )
    if model is not None and model != spec.model:
        raise UserError(
            f"{path} holds a {spec.model}, not a {model}: pass {spec.model} as MODEL, or a {model}'s checkpoint"
        )
    state = content.get("ImageNetDataModule")
    if not isinstance(state, dict) or state.get("mean") is None:
        raise UserError(f"{path} holds no trained mean image (no ImageNetDataModule state): retrain or resume the run")
    changes = {"data": data or spec.data.data, "subset": spec.data.subset if subset is None else subset}
    config = replace(spec.data, **changes, **({} if workers is None else {"workers": workers}))
    dm = build_datamodule(replace(spec, data=config))
    dm.load_state_dict(state)  # the trained mean image first: setup then does not compute one
    dm.setup("validate")
    dm.load_state_dict(state)  # again with the root's classes known: another class list is refused
    module = ClassifierModule(spec)
    _load_weights(module, content.get("state_dict", {}), path, spec.model, None)
    if config.mean == "per-pixel":
        how = "the checkpoint's per-pixel mean image (multiscale, whole images: its channel means)"
    else:
        how = "the channel means of the checkpoint's mean image"
    return Bench(
        model=module.model,
        name=spec.model,
        weights="checkpoint",
        iteration=content.get("global_step"),
        crop=config.crop,
        files=dm.files["val"],
        classes=dm.classes,
        source=dm.source,
        normalize=dm.normalize,
        normalize_any_size=dm.normalize_any_size,
        normalization=f"as in training: minus {how}",
        eval_batch_size=config.eval_batch_size,
        workers=config.workers,
    )


def _torchvision_weights(path: Path, state: dict, model, data, subset, workers, stride_on) -> Bench:
    from resnet_repro.data.imagenet import ImageNetConfig, discover

    holds = _torchvision_name(state)
    if model is None:
        raise UserError(
            f"{path} is a torchvision state dict, which does not name its net: pass MODEL ({holds or 'resnet50'})"
        )
    info = model_info(model)
    if info.family != "imagenet" or not info.residual:
        what = "a CIFAR net" if info.family != "imagenet" else "a plain net (torchvision has none)"
        raise UserError(
            f"{model} is {what}; {path} holds a torchvision {holds or 'ResNet'}: pass {holds or 'its name'}"
        )
    # torchvision's ResNets use projection shortcuts (option B) and, from 50 layers, the stride on the 3x3 ("V1.5");
    # the paper's (its released Caffe models) on the first 1x1. Weights of either load into either net (the shapes
    # are the same), so the placement is the caller's to say, never guessed from the depth.
    kwargs = {"shortcut": "B", "num_classes": state["fc.weight"].shape[0]}
    if info.depth >= 50:
        if stride_on not in ("1x1", "3x3"):
            raise UserError(
                f"{path} holds a bottleneck net, whose weights do not show where each stage's stride-2 sits: pass "
                "--stride-on 3x3 for torchvision's weights (its ResNet v1.5) or --stride-on 1x1 for weights trained "
                "with the paper's placement (its released Caffe models)"
            )
        kwargs["stride_in_1x1"] = stride_on == "1x1"
    elif stride_on is not None:
        raise UserError(f"--stride-on is for bottleneck nets (50, 101, 152 layers); {model} has one place for it")
    if data is None:
        raise UserError(
            f"pass --data ROOT: the torchvision state dict {path} does not record the data it was trained on"
        )
    net = build_model(model, **kwargs)
    _load_weights(net, from_torchvision_state_dict(state), path, model, holds)
    config = ImageNetConfig(str(data), subset=subset, **({} if workers is None else {"workers": workers}))
    files, wnids, source = discover(config)
    if len(wnids) > kwargs["num_classes"]:
        raise UserError(
            f"{path} scores {kwargs['num_classes']} classes, fewer than the {len(wnids)} of {data}: pass --subset N"
        )
    mean = torch.tensor(TORCHVISION_MEAN)[:, None, None]
    std = torch.tensor(TORCHVISION_STD)[:, None, None]

    def normalize(x: torch.Tensor) -> torch.Tensor:
        return (x.float() / 255 - mean.to(x.device)) / std.to(x.device)

    return Bench(
        model=net.to(memory_format=torch.channels_last),  # as our nets train: the same numbers, faster
        name=model,
        weights="torchvision",
        iteration=None,
        crop=TRAIN_CROP,
        files=files["val"],
        classes=tuple(wnids),
        source=source,
        normalize=normalize,
        normalize_any_size=normalize,
        normalization=(
            f"as torchvision trained it: mean {list(TORCHVISION_MEAN)}, std {list(TORCHVISION_STD)} on [0, 1] pixels"
        ),
        eval_batch_size=config.eval_batch_size,
        workers=config.workers,
    )


# --- evaluating and recording -------------------------------------------------------------------------


_VIEWS = {"center": 1, "ten": 10}  # views per image of the crop protocols


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but this machine has no CUDA device: use --device cpu (or auto)")
    return torch.device(name)


def _run_of(checkpoint: Path):
    """The run directory a checkpoint lies in (`<run>/checkpoints/last.ckpt` beside its run.json), or None."""
    from resnet_repro.rundir import RunDir

    run = RunDir(Path(checkpoint).parent.parent)
    return run if run.checkpoint.resolve() == Path(checkpoint).resolve() and run.record_path.is_file() else None


def record_path(checkpoint: Path) -> Path:
    """Where the evaluations of `checkpoint` are recorded: its run's run.json, else `<checkpoint>.evaluations.json`."""
    run = _run_of(checkpoint)
    return run.record_path if run is not None else Path(f"{checkpoint}.evaluations.json")


def probabilities_path(checkpoint: Path, protocol: str) -> Path:
    """Where `--keep-probabilities` saves them: `<run>/probabilities-<protocol>.pt`, else beside the checkpoint."""
    run = _run_of(checkpoint)
    return run.probabilities_path(protocol) if run is not None else Path(f"{checkpoint}.probabilities-{protocol}.pt")


def _read_evaluations(path: Path) -> dict:
    try:
        evaluations = json.loads(path.read_text()) if path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not readable JSON ({exc}); move it away to record afresh") from None
    if not isinstance(evaluations, dict):
        raise UserError(f"{path} does not hold evaluations by protocol; move it away to record afresh")
    return evaluations


def evaluate_checkpoint(
    checkpoint: Path,
    protocol: str,
    *,
    model: str | None = None,
    data: str | None = None,
    subset: int | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    limit: int | None = None,
    keep_probabilities: bool = False,
    progress: bool = True,
    stride_on: str | None = None,
) -> dict:
    """Top-1 and top-5 error (%) of `checkpoint` on the val split under `protocol`, recorded (see `record_path`)
    and returned; every input is checked before anything is written. Arguments as `load_bench` and
    `score_split` (batch_size in images; None: the run's evaluation batch in views); `limit`: the first N images."""
    from resnet_repro.rundir import provenance, timestamp

    checkpoint = Path(checkpoint)
    base = get_protocol(protocol)
    on = _device(device)
    for name, value, low in (("--batch-size", batch_size, 1), ("--workers", workers, 0), ("--limit", limit, 1)):
        if value is not None and value < low:
            raise UserError(f"{name} must be at least {low}, got {value}")
    bench = load_bench(checkpoint, model, data=data, subset=subset, workers=workers, stride_on=stride_on)
    chosen = base.scaled(bench.crop)
    run = _run_of(checkpoint)
    if run is not None:
        run.read_record()  # a corrupt run.json is refused now, not after the evaluation
        run.lock()  # refused now if another process is training the run; released at once
        run.unlock()
    else:
        _read_evaluations(record_path(checkpoint))
    n = len(bench.files) if limit is None else min(limit, len(bench.files))
    # By default as many views per batch as the run's own evaluations (multiscale: one image at a time).
    images = 1 if chosen.crop is None else batch_size or max(1, bench.eval_batch_size // _VIEWS[chosen.views])
    started = time.perf_counter()
    probabilities, labels = score_split(
        bench.model,
        bench.files,
        chosen,
        bench.normalize if chosen.crop is not None else bench.normalize_any_size,
        index=torch.arange(n),
        batch_size=images,
        workers=bench.workers,
        device=on,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    errors = top_k_errors(probabilities, labels)
    result = {
        "model": bench.name,
        "weights": bench.weights,
        "stride_on": stride_on,  # where outside bottleneck weights were told their stride sits (None: ours, or basic)
        "normalization": bench.normalization,
        "checkpoint": "checkpoints/last.ckpt" if run is not None else checkpoint.name,
        "iteration": bench.iteration,
        "protocol": chosen.name,
        "short_sides": list(chosen.short_sides),
        "crop": chosen.crop,
        "top1_error": errors[1],
        "top5_error": errors[5],
        "images": n,
        "limit": limit,
        "classes": len(bench.classes),
        "data_listing_sha256": bench.source["listing_sha256"],
        "device": str(on),
        "batch_size": images,
        "seconds": round(seconds, 3),
        "evaluated": timestamp(),
        "commit": provenance()["commit"],
        "probabilities": None,
    }
    if keep_probabilities:
        target = probabilities_path(checkpoint, chosen.name)
        _save_probabilities(target, probabilities, labels, bench, result)
        result["probabilities"] = target.name
    if run is not None:
        run.add_evaluation(chosen.name, result)
    else:
        path = record_path(checkpoint)
        write_json(path, {**_read_evaluations(path), chosen.name: result})
    return result


def _save_probabilities(path: Path, probabilities, labels, bench: Bench, result: dict) -> None:
    """The per-image probabilities (float16 [N, classes]), labels and wnids, for ensembles (Table 5); atomic."""
    buffer = io.BytesIO()
    content = {
        "probabilities": probabilities.half(),
        "labels": labels.to(torch.int64),
        "classes": list(bench.classes),  # the labels index these; the net's further outputs are other classes
        **{k: result[k] for k in ("model", "protocol", "iteration", "images", "limit", "data_listing_sha256")},
    }
    torch.save(content, buffer)
    write_bytes(path, buffer.getvalue())


def evaluate_run(
    run_dir: Path,
    protocol: str,
    *,
    data: str | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    limit: int | None = None,
    keep_probabilities: bool = False,
    progress: bool = True,
) -> dict:
    """Test a run's `checkpoints/last.ckpt` under `protocol` and record the result in its run.json under
    "evaluations" (other protocols kept); returns it. With `keep_probabilities`, also writes
    `<run_dir>/probabilities-<protocol>.pt` (see `read_probabilities`). Call it on a run no process is
    training, e.g. after `training.train` has returned: writing run.json takes the run directory's lock."""
    from resnet_repro.rundir import RunDir

    run = RunDir(run_dir)
    if run.read_record() is None:
        raise UserError(f"{run.path} has no run.json: pass a run directory (runs/<run id>) that has been trained")
    if not run.checkpoint.is_file():
        raise UserError(f"{run.path} has no checkpoints/last.ckpt to test: train (or resume) the run first")
    return evaluate_checkpoint(
        run.checkpoint,
        protocol,
        data=data,
        workers=workers,
        batch_size=batch_size,
        device=device,
        limit=limit,
        keep_probabilities=keep_probabilities,
        progress=progress,
    )


def read_probabilities(run_dir: Path, protocol: str) -> dict:
    """A run's kept probabilities under `protocol`: {"probabilities": float16 [N, C], "labels": int64 [N],
    "classes": wnids, ...}; a UserError when missing, unreadable or not of the run's recorded evaluation."""
    from resnet_repro.rundir import RunDir

    run = RunDir(run_dir)
    path = run.probabilities_path(get_protocol(protocol).name)
    if not path.is_file():
        raise UserError(
            f"no {path.name} in {run.path}: evaluate the run with keep_probabilities "
            f"(resnet-repro evaluate MODEL --checkpoint {run.checkpoint} --protocol {protocol} --keep-probabilities)"
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(
            f"{path} is not readable ({_reason(exc)}); evaluate the run again with --keep-probabilities"
        ) from None
    recorded = ((run.read_record() or {}).get("evaluations") or {}).get(protocol, {})
    if any(recorded.get(k, "none") != content.get(k) for k in ("iteration", "images", "data_listing_sha256")):
        # A resumed or retrained run rewrites run.json: probabilities of an earlier iterate are stale.
        raise UserError(
            f"{path} is not of the run's recorded {protocol} evaluation (iteration {content.get('iteration')}, "
            f"run.json: {recorded.get('iteration', 'none')}); evaluate the run again with --keep-probabilities"
        )
    return content
