"""Fig. 4: training on ImageNet; thin curves = training error, bold = validation error of the centre crops.

    python experiments/fig4.py --profile paper --data ROOT --devices 8 --strategy ddp   # Sec. 3.4: 4 runs of 60e4 iterations, for GPUs
    python experiments/fig4.py --profile smoke --data ROOT --subset 3   # seconds, on any small ImageNet-layout tree

Left: plain-18 and plain-34 (the deeper plain net has higher training and validation error all the way).
Right: ResNet-18 and ResNet-34 with option A shortcuts (the deeper ResNet is better). Table 2 tests the
same four runs with 10 crops; the run cache trains them once.
"""

from resnet_repro.experiment import Experiment, Panel

EXPERIMENT = Experiment(
    id="fig4",
    caption="Training on ImageNet. Thin curves denote training error, and bold curves denote validation error of "
    "the center crops. Left: plain networks of 18 and 34 layers. Right: ResNets of 18 and 34 layers. In this plot, "
    "the residual networks have no extra parameter compared to their plain counterparts.",
    dataset="imagenet",
    models=("plain18", "plain34", "resnet18", "resnet34"),
    render="curves",
    panels=(Panel("plain", ("plain18", "plain34")), Panel("ResNet", ("resnet18", "resnet34"))),
)

if __name__ == "__main__":
    from resnet_repro.commands.run import main

    raise SystemExit(main(EXPERIMENT))
