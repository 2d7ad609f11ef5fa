"""Model complexity as the paper reports it: parameters (Table 6) and multiply-adds (Table 1).

The paper's "FLOPs" are multiply-adds of the conv and fully-connected layers (Sec. 3.3:
"3.6 billion FLOPs (multiply-adds)"). We count them with forward hooks: a conv contributes
(output elements) x (in_channels / groups) x kh x kw, a linear layer
(output elements) x in_features.
Biases, BN, ReLU, pooling and shortcut additions are not counted. torch's FlopCounterMode counts
2 FLOPs per multiply-add, so its total is twice ours.
"""

import torch
from torch import nn

_COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def count_parameters(model: nn.Module) -> int:
    """All parameters, BN scales and shifts included (as in Table 6 and torchvision's counts)."""
    return sum(parameter.numel() for parameter in model.parameters())


def count_multiply_adds(model: nn.Module, input_size: int | tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of a single image (side `input_size`, or (C, H, W)).

    Runs one forward in eval mode without gradients on the model's device; works on a model
    built on the "meta" device, which makes counting free of compute.
    """
    shape = (3, input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        # weight[0] holds one output unit's weights: in_channels/groups x kernel, or in_features.
        total += output.numel() * module.weight[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _COUNTED)]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *shape), device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total
