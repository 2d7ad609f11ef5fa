"""`resnet-repro evaluate MODEL --checkpoint PATH --protocol P`: top-1 and top-5 error on ImageNet val
under one of Sec. 3.4's test protocols (center, 10crop, multiscale), recorded beside the checkpoint.

Examples:
    resnet-repro evaluate resnet34 --checkpoint runs/resnet34-s0-1a2b3c4d/checkpoints/last.ckpt --protocol 10crop
    resnet-repro evaluate resnet50 --checkpoint resnet50.pth --stride-on 3x3 --data /data/imagenet --protocol center
"""

import argparse
from pathlib import Path

from resnet_repro.evaluation import PROTOCOLS
from resnet_repro.testing import evaluate_checkpoint, probabilities_path, record_path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="test ImageNet weights under a Sec. 3.4 protocol (center, 10crop, multiscale)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="the net the weights are for: resnet18 ... resnet152, plain18, plain34")
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a run's checkpoints/last.ckpt, or a torchvision ResNet state dict (.pth of model.state_dict())",
    )
    parser.add_argument(
        "--protocol",
        required=True,
        choices=list(PROTOCOLS),
        help="; ".join(f"{p.name}: {p.used_for}" for p in PROTOCOLS.values()),
    )
    parser.add_argument("--data", default=None, help="ImageNet root (default: the one the checkpoint was trained on)")
    parser.add_argument(
        "--subset", type=int, default=None, help="the first N classes (default: the checkpoint's; torchvision: all)"
    )
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers decoding and cutting views")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="images per batch (center, 10crop; multiscale takes one)"
    )
    parser.add_argument("--limit", type=int, default=None, help="test only the first N val images (quick checks)")
    parser.add_argument(
        "--stride-on",
        choices=["1x1", "3x3"],
        default=None,
        help="a bottleneck net's (50/101/152) state dict from outside: where each stage's stride-2 sits, which its "
        "weights cannot show; 3x3 for torchvision's (its ResNet v1.5), 1x1 for the paper's (its Caffe models)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument(
        "--keep-probabilities",
        action="store_true",
        help="also save every image's class probabilities (for softmax-averaged ensembles, Table 5)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    checkpoint = Path(args.checkpoint)
    result = evaluate_checkpoint(
        checkpoint,
        args.protocol,
        model=args.model,
        data=args.data,
        subset=args.subset,
        workers=args.workers,
        batch_size=args.batch_size,
        device=args.device,
        limit=args.limit,
        keep_probabilities=args.keep_probabilities,
        progress=args.progress,
        stride_on=args.stride_on,
    )
    weights = f"iteration {result['iteration']}" if result["weights"] == "checkpoint" else "torchvision weights"
    limited = f" (the first {result['images']}: --limit {result['limit']})" if result["limit"] is not None else ""
    print(
        f"{result['model']} ({weights}), {result['protocol']}: top-1 error {result['top1_error']:.2f}%, "
        f"top-5 error {result['top5_error']:.2f}% on {result['images']} val images{limited} "
        f"in {result['seconds']:.1f} s"
    )
    print(f"inputs normalised {result['normalization']}")
    kept = f"; probabilities in {probabilities_path(checkpoint, result['protocol'])}" if result["probabilities"] else ""
    print(f"recorded in {record_path(checkpoint)}{kept}")
    return 0
