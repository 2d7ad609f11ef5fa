"""Fig. 1: training error (left) and test error (right) on CIFAR-10 with 20-layer and 56-layer plain networks.

    python experiments/fig1.py --profile quick --jobs 2  # plain-20, plain-56 x 2,000 iterations: ~65 min on 2 CPU cores
    python experiments/fig1.py --profile paper    # 64k iterations each (Sec. 4.2): for a GPU

Paper: "The deeper network has higher training error, and thus test error." (plain-56 ends near 6% train /
13.3% test, plain-20 near 1.4% / 9.7%, read off the figure).
"""

from resnet_repro.experiment import Experiment

EXPERIMENT = Experiment(
    id="fig1",
    caption="Training error (left) and test error (right) on CIFAR-10 with 20-layer and 56-layer plain networks. "
    "The deeper network has higher training error, and thus test error.",
    models=("plain20", "plain56"),
    render="train_test",
)

if __name__ == "__main__":
    from resnet_repro.commands.run import main

    raise SystemExit(main(EXPERIMENT))
