"""What the channel analysis knows about operations, by kind of effect on channels.

Anything not listed here is treated as unknown: the channels it touches become non-prunable.
"""

from __future__ import annotations

import operator
import sys

import torch
import torch.nn.functional as F
from torch import nn

CONV_MODULES = (nn.Conv1d, nn.Conv2d)
NORM_MODULES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
LINEAR_MODULES = (nn.Linear,)

# Parameter-free modules whose output channel c depends only on input channel c.
CHANNELWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.Upsample,
    # padding of the trailing (spatial) dims; one that resizes a channel dim is caught by the rule
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ReflectionPad1d,
    nn.ReflectionPad2d,
    nn.ReplicationPad1d,
    nn.ReplicationPad2d,
)
FLATTEN_MODULES = (nn.Flatten,)

CHANNELWISE_FUNCTIONS = {
    torch.relu,
    torch.relu_,
    F.relu,
    F.relu_,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    torch.sigmoid,
    F.sigmoid,
    torch.tanh,
    F.tanh,
    F.softplus,
    torch.clamp,
    torch.abs,
    torch.exp,
    torch.neg,
    torch.sqrt,
    torch.rsqrt,
    torch.erf,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.max_pool1d,
    F.max_pool2d,
    F.avg_pool1d,
    F.avg_pool2d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.interpolate,
    F.pad,
}

# timm's and torchvision's own element-wise helpers, looked up only once the library has loaded
# them (a model that calls them imported them), so importing the engine imports neither.
_LIBRARY_CHANNELWISE = {
    "torchvision.ops.stochastic_depth": ("stochastic_depth",),
    "timm.layers.drop": ("drop_path",),
    "timm.layers.activations": ("swish", "sigmoid", "hard_sigmoid", "hard_swish", "gelu", "mish"),
}


def is_channelwise_function(target: object) -> bool:
    """Whether a traced function call maps channel c to channel c (:data:`CHANNELWISE_FUNCTIONS`,
    torchvision's ``stochastic_depth``, timm's ``drop_path`` and activations)."""
    if target in CHANNELWISE_FUNCTIONS:
        return True
    for module_name, names in _LIBRARY_CHANNELWISE.items():
        module = sys.modules.get(module_name)
        if module is not None and any(target is getattr(module, name, None) for name in names):
            return True
    return False


_LIBRARY_CHANNELWISE_MODULES = {
    "torchvision.ops.stochastic_depth": ("StochasticDepth",),
    "timm.layers.drop": ("DropPath",),
}


def is_channelwise_module(module: nn.Module) -> bool:
    """Whether a module maps channel c to channel c (:data:`CHANNELWISE_MODULES`, and the per-example
    drop-path modules of torchvision and timm, which the tracer keeps as leaves)."""
    if isinstance(module, CHANNELWISE_MODULES):
        return True
    for module_name, names in _LIBRARY_CHANNELWISE_MODULES.items():
        library = sys.modules.get(module_name)
        if library is not None and any(type(module) is getattr(library, name, None) for name in names):
            return True
    return False


CHANNELWISE_METHODS = {
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "tanh_",
    "clamp",
    "clamp_",
    "abs",
    "exp",
    "sqrt",
    "rsqrt",
    "neg",
    "contiguous",
    "clone",
    "float",
    "half",
    "double",
    "to",
    "type_as",
    "pow",
    "square",
}

BINARY_FUNCTIONS = {
    operator.add,
    operator.iadd,
    operator.mul,
    operator.imul,
    operator.sub,
    operator.isub,
    operator.truediv,
    operator.itruediv,
    torch.add,
    torch.mul,
    torch.sub,
    torch.div,
    torch.maximum,
    torch.minimum,
    torch.addcmul,
}
BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_", "addcmul", "addcmul_"}

SIZE_ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod}

RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "expand", "expand_as", "view_as", "reshape_as"}
PERMUTE_FUNCTIONS = {torch.permute, torch.transpose, torch.movedim, torch.swapaxes}
PERMUTE_METHODS = {"permute", "transpose", "movedim", "swapaxes"}

CONCAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
STACK_FUNCTIONS = {torch.stack}
SPLIT_FUNCTIONS = {torch.chunk, torch.split}
SPLIT_METHODS = {"chunk", "split"}

SOFTMAX_FUNCTIONS = {torch.softmax, torch.log_softmax, F.softmax, F.log_softmax}
SOFTMAX_METHODS = {"softmax", "log_softmax"}

REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax}
REDUCE_METHODS = {"mean", "sum", "amax"}

CONV_FUNCTIONS = {F.conv1d, F.conv2d}
LINEAR_FUNCTIONS = {F.linear}
NORM_FUNCTIONS = {F.batch_norm, F.layer_norm, F.group_norm}

# Calls that only read metadata or check it, and never move channel data.
SHAPE_QUERY_FUNCTIONS = {getattr, operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge}
SHAPE_QUERY_METHODS = {"size", "dim"}
ASSERT_FUNCTIONS = {torch._assert}
