"""What the channel analysis knows about operations, by kind of effect on the channel dimension.

Anything not listed here is treated as unknown: the channels it touches become non-prunable.
"""

from __future__ import annotations

import operator
import sys

import torch
import torch.nn.functional as F
from torch import nn

CONV_MODULES = (nn.Conv1d, nn.Conv2d)
NORM_MODULES = (nn.modules.batchnorm._BatchNorm,)
LINEAR_MODULES = (nn.Linear,)

# Parameter-free modules whose output channel c depends only on input channel c.
CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.Upsample,
)
RESHAPE_MODULES = (nn.Flatten,)


CHANNELWISE_FUNCTIONS = {
    torch.relu, torch.relu_, F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu, F.silu, F.mish,
    F.hardswish, F.hardsigmoid, F.hardtanh, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh,
    F.softplus, torch.clamp, torch.abs, torch.exp, torch.neg,
    F.dropout, F.dropout1d, F.dropout2d,
    F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    F.interpolate,
}


def is_channelwise_function(target: object) -> bool:
    """Whether a traced function call maps channel c to channel c (:data:`CHANNELWISE_FUNCTIONS`).

    torchvision's ``stochastic_depth`` counts too. It is looked up only once torchvision has loaded
    it (a model that calls it imported it), so importing the engine never imports torchvision.
    """
    if target in CHANNELWISE_FUNCTIONS:
        return True
    module = sys.modules.get("torchvision.ops.stochastic_depth")
    return module is not None and target is getattr(module, "stochastic_depth", None)


CHANNELWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "abs", "exp",
    "neg", "contiguous", "clone", "float", "half", "double", "to", "type_as",
}

BINARY_FUNCTIONS = {
    operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.isub,
    operator.truediv, operator.itruediv, torch.add, torch.mul, torch.sub, torch.div,
    torch.maximum, torch.minimum,
}
BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}

RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}

CONCAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
SPLIT_FUNCTIONS = {torch.chunk, torch.split}
SPLIT_METHODS = {"chunk", "split"}

REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax}
REDUCE_METHODS = {"mean", "sum", "amax"}

# Calls that only read metadata (shapes) and never move channel data.
SHAPE_QUERY_FUNCTIONS = {getattr}
SHAPE_QUERY_METHODS = {"size", "dim"}
