"""Table 5: top-5 error (%) of ensembles: a softmax average of the trained models a user lists.

    python experiments/table5.py --profile paper --data ROOT --members resnet50,resnet101,resnet152
    python experiments/table5.py --profile smoke --data ROOT --subset 3

The paper's ResNet entry (3.57%) combines six models of different depth (two of 152 layers) and was scored by
the ILSVRC 2015 test server on the 100k test images, which no user can score locally; ours averages the
multi-scale class probabilities of Table 4's runs (the same runs, tested once) on the validation images of
the user's copy, and the page says so. `--members` picks the runs (model names or run ids; default: all).
"""

from resnet_repro.experiment import Experiment, Variant

EXPERIMENT = Experiment(
    id="table5",
    caption="Error rates (%) of ensembles. The top-5 error is on the test set of ImageNet and reported by the "
    "test server.",
    dataset="imagenet",
    models=("resnet34", "resnet50", "resnet101", "resnet152"),
    variants_of={"resnet34": (Variant("B", shortcut="B"), Variant("C", shortcut="C"))},
    render="ensemble",
    protocol="multiscale",
    keep_probabilities=True,
)

if __name__ == "__main__":
    from resnet_repro.commands.run import main

    raise SystemExit(main(EXPERIMENT))
