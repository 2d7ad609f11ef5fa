"""Table 6: classification error on the CIFAR-10 test set; ResNet-110 run 5 times, "best (mean±std)".

    python experiments/table6.py --profile quick --jobs 2  # ResNet-20 and ResNet-56, 2,000 iterations, 1 seed: ~50 min on 2 CPU cores
    python experiments/table6.py --profile paper  # all depths, 64k iterations, 5 seeds of ResNet-110: for a GPU

Paper: ResNet-20 8.75, 32 7.51, 44 7.17, 56 6.97, 110 6.43 (6.61±0.16), 1202 7.93 (%). Ours reports the
last-iterate test error of every run (never a checkpoint picked by test error), best and mean±std over seeds.
"""

from resnet_repro.experiment import Experiment

EXPERIMENT = Experiment(
    id="table6",
    caption="Classification error on the CIFAR-10 test set. All methods are with data augmentation. "
    "For ResNet-110, we run it 5 times and show 'best (mean±std)'.",
    models=("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"),
    render="table6",
    seeds={"resnet110": 5},
)

if __name__ == "__main__":
    from resnet_repro.commands.run import main

    raise SystemExit(main(EXPERIMENT))
