"""What the channel analysis finds in a model: its layers, norms and parameters by channel layout."""

from __future__ import annotations

from dataclasses import dataclass, field

from prune_core.spaces import Layout, SpaceSet


@dataclass(frozen=True)
class LayerRole:
    """A conv or Linear: reads ``in_layout`` and produces ``out_layout`` (its filters or units):
    one segment, or several equal parts where a split of its output needs them.

    ``functional``: the layer is a subclass fx traced into (its weights are sliced through
    :attr:`ChannelGraph.bound`, not by name).
    """

    name: str
    kind: str
    in_layout: Layout
    out_layout: Layout
    groups: int
    functional: bool = False


@dataclass(frozen=True)
class NormRole:
    """A BatchNorm, LayerNorm or GroupNorm (``kind``) over the channels of ``layout``.

    ``module_level``: called as a ``torch.nn`` module (its tensors are sliced by name);
    otherwise a subclass traced into, whose parameters are in :attr:`ChannelGraph.bound`.
    """

    name: str
    layout: Layout
    kind: str
    module_level: bool


@dataclass(frozen=True)
class MaskedNormRole:
    """A LayerNorm over channels: while pruning is simulated, a forward hook on module ``name``
    recomputes it over the kept channels of dim ``dim`` of the module's input."""

    name: str
    dim: int
    layout: Layout
    eps: float


@dataclass
class ChannelGraph:
    """Result of the channel analysis of one model."""

    spaces: SpaceSet
    layers: dict[str, LayerRole] = field(default_factory=dict)
    norms: dict[str, NormRole] = field(default_factory=dict)
    masked_norms: dict[str, MaskedNormRole] = field(default_factory=dict)
    bound: dict[str, dict[int, Layout]] = field(default_factory=dict)
    """Parameter or buffer ``"module.attr"`` -> {dimension: layout} it is sliced along."""
    points: dict[str, str] = field(default_factory=dict)
    """Layer name -> module whose output is that layer's pruning point (its BatchNorm, or itself)."""
    point_dims: dict[str, int] = field(default_factory=dict)
    """Layer name -> the channel dimension of its pruning point's output."""
    inplace_modules: dict[str, list[str]] = field(default_factory=dict)
    """Layer name -> modules (``inplace=True``) that overwrite its pruning point's output."""
    relu_after_point: dict[str, str] = field(default_factory=dict)
    """Layer name -> the ``nn.ReLU(inplace=True)`` that is the only consumer of its pruning point."""
    kept_whole: dict[str, str] = field(default_factory=dict)
    """Module -> why it is kept whole (it could not be traced): nothing inside it is pruned."""
    costly_forward: bool = False
    """The model's forward on the example took long: runs that need only shapes use meta tensors."""

    def producers(self) -> dict[int, list[str]]:
        """Space root -> names of the layers whose units make up that space, in graph order."""
        result: dict[int, list[str]] = {}
        for role in self.layers.values():
            for seg in role.out_layout:
                result.setdefault(self.spaces.find(seg.space), []).append(role.name)
        return result
