"""Fig. 7 (Sec. 4.2): standard deviations of layer responses, recorded by every run at its last iterate.

A response is the output of a 3x3 layer "after BN and before other nonlinearity (ReLU/addition)".
The paper does not say over what the std is taken; we take it over every element of the layer's
output on the whole test set (images, channels and positions), with BN in evaluation mode, as the
test error is computed. Sums are kept in float64 on the device and reduced over DDP ranks.
"""

import torch
from torch import nn

from resnet_repro.models import layer_response_bns


class LayerResponses:
    """Forward hooks that sum each response layer's outputs and squares while `active`."""

    def __init__(self, model: nn.Module):
        self.layers = layer_response_bns(model)
        self.active = False
        self._sums: torch.Tensor | None = None  # [layers, 3]: count, sum, sum of squares
        self._handles = [bn.register_forward_hook(self._hook(i)) for i, (_, bn) in enumerate(self.layers)]

    def _hook(self, i: int):
        def record(module, inputs, output):
            if not self.active:
                return
            out = output.detach().float()
            if self._sums is None:
                self._sums = torch.zeros(len(self.layers), 3, dtype=torch.float64, device=out.device)
            self._sums[i, 0] += out.numel()
            self._sums[i, 1] += out.sum(dtype=torch.float64)
            self._sums[i, 2] += out.square().sum(dtype=torch.float64)

        return record

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def result(self, reduce=None) -> list[dict]:
        """[{"layer": name, "std": value}, ...] in forward order; `reduce` sums over DDP ranks."""
        if self._sums is None:
            return []
        sums = reduce(self._sums) if reduce is not None else self._sums
        count, total, squares = sums.double().cpu().unbind(1)
        mean = total / count
        std = (squares / count - mean.square()).clamp_min(0).sqrt()
        return [{"layer": name, "std": float(s)} for (name, _), s in zip(self.layers, std, strict=True)]
