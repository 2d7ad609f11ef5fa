"""Table 3: error rates (%, 10-crop testing) on ImageNet validation: shortcut options and deeper bottleneck nets.

    python experiments/table3.py --profile paper --data ROOT --devices 8 --strategy ddp   # 7 runs of 60e4 iterations
    python experiments/table3.py --profile smoke --data ROOT --subset 3

Paper (top-1 / top-5): plain-34 28.54/10.02; ResNet-34 A 25.03/7.76, B 24.52/7.46, C 24.19/7.40; ResNet-50
22.85/6.71, 101 21.75/6.05, 152 21.43/5.71 (50/101/152 with option B), beside the quoted VGG-16, GoogLeNet
and PReLU-net rows. plain-34 and ResNet-34 A are Fig. 4's runs.
"""

from resnet_repro.experiment import Experiment, Variant

EXPERIMENT = Experiment(
    id="table3",
    caption="Error rates (%, 10-crop testing) on ImageNet validation. VGG-16 is based on our test. "
    "ResNet-50/101/152 are of option B that only uses projections for increasing dimensions.",
    dataset="imagenet",
    models=("plain34", "resnet34", "resnet50", "resnet101", "resnet152"),
    variants_of={"resnet34": (Variant("A", shortcut="A"), Variant("B", shortcut="B"), Variant("C", shortcut="C"))},
    render="imagenet_table",
    protocol="10crop",
)

if __name__ == "__main__":
    from resnet_repro.commands.run import main

    raise SystemExit(main(EXPERIMENT))
