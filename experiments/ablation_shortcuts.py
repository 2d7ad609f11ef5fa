"""Shortcut options A, B and C (Sec. 3.3, Table 3's question) at CIFAR size: ResNet-20 and ResNet-56.

    python experiments/ablation_shortcuts.py --profile quick --jobs 2  # ResNet-20 A/B/C, 2,000 iterations: ~40 min on 2 CPU cores
    python experiments/ablation_shortcuts.py --profile paper           # 20 and 56 layers, 64k iterations: for a GPU

Paper (ImageNet, Table 3, 10-crop top-1): ResNet-34 A 25.03, B 24.52, C 24.19: "B is slightly better than
A ... C is marginally better than B", "projection shortcuts are not essential for addressing the
degradation problem". The A arm is the ResNet of Fig. 6 and Table 6 (the same run, reused from the cache).
"""

from resnet_repro.experiment import Experiment, Variant

EXPERIMENT = Experiment(
    id="ablation_shortcuts",
    caption="Shortcut options on CIFAR-10: (A) zero-padding shortcuts for increasing dimensions, all "
    "parameter-free; (B) projection shortcuts for increasing dimensions, identity otherwise; (C) all "
    "shortcuts are projections.",
    models=("resnet20", "resnet56"),
    render="ablation",
    variants=(Variant("A", shortcut="A"), Variant("B", shortcut="B"), Variant("C", shortcut="C")),
    # DEVIATION (paper: asks this question on ImageNet only): the quick profile runs ResNet-20 alone.
    profile_changes={
        "quick": {
            "depths": (20,),
            "purpose": "ResNet-20 with option A, B and C, 2,000 iterations (lr /10 at 1,000 and 1,500), one seed "
            "each: a first look at Table 3's question at CIFAR size, not the paper's final errors",
        }
    },
)

if __name__ == "__main__":
    from resnet_repro.commands.run import main

    raise SystemExit(main(EXPERIMENT))
