"""Table 4: error rates (%) of single-model results on the ImageNet validation set, multi-scale testing.

    python experiments/table4.py --profile paper --data ROOT --devices 8 --strategy ddp   # Table 3's B/C and bottleneck runs
    python experiments/table4.py --profile smoke --data ROOT --subset 3

Paper (top-1 / top-5): ResNet-34 B 21.84/5.71, C 21.53/5.60, ResNet-50 20.74/5.25, 101 19.87/4.60, 152
19.38/4.49. The caption names no protocol; Sec. 3.4's best results are fully-convolutional and multi-scale
(shorter side 224, 256, 384, 480, 640), which this table uses. The runs are Table 3's (the run cache).
"""

from resnet_repro.experiment import Experiment, Variant

EXPERIMENT = Experiment(
    id="table4",
    caption="Error rates (%) of single-model results on the ImageNet validation set (except † reported on the "
    "test set).",
    dataset="imagenet",
    models=("resnet34", "resnet50", "resnet101", "resnet152"),
    variants_of={"resnet34": (Variant("B", shortcut="B"), Variant("C", shortcut="C"))},
    render="imagenet_table",
    protocol="multiscale",
    keep_probabilities=True,  # Table 5 averages these runs' multi-scale probabilities
)

if __name__ == "__main__":
    from resnet_repro.commands.run import main

    raise SystemExit(main(EXPERIMENT))
