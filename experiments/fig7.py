"""Fig. 7: standard deviations (std) of layer responses on CIFAR-10; top: original order, bottom: sorted.

    python experiments/fig7.py --profile quick --jobs 2  # reuses Fig. 6's quick runs (20 and 56 layers): renders in seconds
    python experiments/fig7.py --profile paper           # plain-20/56, ResNet-20/56/110 at 64k iterations: for a GPU

The responses are the outputs of each 3x3 layer, after BN and before other nonlinearity (ReLU/addition),
recorded by every run at its last iterate on the test set. Paper: "ResNets have generally smaller
responses than their plain counterparts" and "the deeper ResNet has smaller magnitudes of responses".
"""

from resnet_repro.experiment import Experiment

EXPERIMENT = Experiment(
    id="fig7",
    caption="Standard deviations (std) of layer responses on CIFAR-10. The responses are the outputs of each 3x3 "
    "layer, after BN and before nonlinearity. Top: the layers are shown in their original order. Bottom: the "
    "responses are ranked in descending order.",
    models=("plain20", "plain56", "resnet20", "resnet56", "resnet110"),
    render="responses",
    profile_changes={
        "quick": {
            "purpose": "the layer responses of Fig. 6's quick runs (20 and 56 layers, 2,000 iterations, one seed): "
            "shows how plain and residual nets' responses compare at this budget, not at the paper's 64k"
        }
    },
)

if __name__ == "__main__":
    from resnet_repro.commands.run import main

    raise SystemExit(main(EXPERIMENT))
