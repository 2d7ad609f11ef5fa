"""Precise BN: after training, every BN layer's mean and variance recomputed over many training images.

The paper's released ImageNet models did this ("BN mean/var computed as an average over a large training
batch after training, not a moving average"); pycls calls it precise BN. Training keeps the running
averages of Lightning/PyTorch (momentum 0.1), which trail the weights of the last iterations.
"""

import math

import torch
from torch import nn


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, batches, reduce=None) -> int:
    """Replace the running statistics of `model`'s BN layers by the plain average of the per-batch mean and
    variance over `batches` (input tensors, in training mode: normalised by their own batch statistics, as
    in training); `reduce(tensor)` averages them over processes under DDP. Returns the images seen.

    As in pycls, the variance is the mean of the batch variances: over batches of 32 or more the spread of
    the batch means, which that leaves out, is small against them.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # PyTorch's cumulative average: each batch weighs the same
    was_training = model.training
    model.train()
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += len(x)
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
    if reduce is not None:
        for bn in bns:
            bn.running_mean.copy_(reduce(bn.running_mean))
            bn.running_var.copy_(reduce(bn.running_var))
    return seen


def precise_bn(trainer, module, datamodule, images: int) -> int:
    """Recompute `module.model`'s BN statistics over `images` training images drawn after the last iteration
    (whole global batches, so at least `images`); the count seen over all processes."""
    # After fit, Lightning's teardown has moved the module back to the CPU: bring it to the training device.
    module.to(trainer.strategy.root_device)
    batches = math.ceil(images / module.spec.batch_size)
    loader = datamodule.train_batches_after(trainer.global_step, batches)
    inputs = (trainer.strategy.batch_to_device(batch)[0] for batch in loader)
    world = trainer.world_size
    reduce = (lambda t: trainer.strategy.reduce(t, reduce_op="mean")) if world > 1 else None
    return recompute_bn_statistics(module.model, inputs, reduce) * world
