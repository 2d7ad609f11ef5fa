"""Fig. 6: training on CIFAR-10; dashed = training error, bold = test error.

    python experiments/fig6.py --profile quick --jobs 2  # 20 and 56 layers, plain and ResNet, 2,000 iterations: ~1.5 h on 2 CPU cores
    python experiments/fig6.py --profile paper    # all depths, 64k iterations (Sec. 4.2): for a GPU

Left: plain-20/32/44/56 (deeper = higher error). Middle: ResNet-20/32/44/56/110 (deeper = lower error).
Right: ResNet-110 vs ResNet-1202 (1202 overfits: 7.93% vs 6.43% test). Plain-110 is trained but, as in
the paper, not drawn when its error is off the axis (the paper: "higher than 60%").
"""

from resnet_repro.experiment import Experiment, Panel

EXPERIMENT = Experiment(
    id="fig6",
    caption="Training on CIFAR-10. Dashed lines denote training error, and bold lines denote testing error. "
    "Left: plain networks. The error of plain-110 is higher than 60% and not displayed. "
    "Middle: ResNets. Right: ResNets with 110 and 1202 layers.",
    models=(
        "plain20",
        "plain32",
        "plain44",
        "plain56",
        "plain110",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "resnet1202",
    ),
    render="curves",
    panels=(
        Panel("plain", ("plain20", "plain32", "plain44", "plain56", "plain110")),
        Panel("ResNet", ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")),
        Panel("ResNet-110 vs ResNet-1202", ("resnet110", "resnet1202")),
    ),
    labels={"resnet110": "residual-110", "resnet1202": "residual-1202"},
)

if __name__ == "__main__":
    from resnet_repro.commands.run import main

    raise SystemExit(main(EXPERIMENT))
