"""Table 2: top-1 error (%, 10-crop testing) on ImageNet validation; plain vs ResNet at 18 and 34 layers.

    python experiments/table2.py --profile paper --data ROOT --devices 8 --strategy ddp   # Fig. 4's four runs, then 10-crop tests
    python experiments/table2.py --profile smoke --data ROOT --subset 3

Paper: plain-18 27.94, plain-34 28.54, ResNet-18 27.88, ResNet-34 25.03. The ResNets use option A (zero-padded
identity shortcuts): no extra parameters. Each run's last iterate is tested once and the result kept in its
run.json, so Fig. 4 and this table share the runs.
"""

from resnet_repro.experiment import Experiment

EXPERIMENT = Experiment(
    id="table2",
    caption="Top-1 error (%, 10-crop testing) on ImageNet validation. Here the ResNets have no extra parameter "
    "compared to their plain counterparts.",
    dataset="imagenet",
    models=("plain18", "resnet18", "plain34", "resnet34"),
    render="imagenet_table",
    protocol="10crop",
)

if __name__ == "__main__":
    from resnet_repro.commands.run import main

    raise SystemExit(main(EXPERIMENT))
