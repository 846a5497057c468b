"""analyze_network: what can be pruned in a model, what cannot and why (MATLAB's "Analyze for Compression")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from prune_core import ops
from prune_core.prunable import TaylorPrunableNetwork

NOT_SELECTED = "not selected by layer_names"
SINGLE_UNIT = "only one filter (or one group of a grouped conv): nothing can be removed"


@dataclass(frozen=True)
class NetworkAnalysis:
    """Result of :func:`analyze_network`.

    ``layers`` has one row per conv or Linear (``layer``, ``type``, ``filters``, ``prunable``, ``group``,
    ``reason``); ``groups`` one row per prunable group (``group``, ``layers``, ``units``: the
    filters, or whole channel groups, that are removed together).
    """

    learnables: int
    minimum_learnables: int
    layers: pd.DataFrame
    groups: pd.DataFrame

    @property
    def max_reduction(self) -> float:
        """Largest achievable share of learnables removed (every group down to one unit)."""
        return 1.0 - self.minimum_learnables / self.learnables

    @property
    def prunable_layer_names(self) -> list[str]:
        return self.layers.loc[self.layers["prunable"], "layer"].tolist()

    def __str__(self) -> str:
        prunable = self.layers["prunable"]
        lines = [
            f"Learnables: {self.learnables}; at maximum compression {self.minimum_learnables} "
            f"({100 * self.max_reduction:.2f}% fewer).",
            f"Prunable layers: {int(prunable.sum())} of {len(self.layers)}, in {len(self.groups)} groups.",
        ]
        for _, row in self.layers[~prunable].iterrows():
            lines.append(f"  not prunable: {row['layer']} ({row['reason']})")
        return "\n".join(lines)


def analyze_network(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    layer_names: Sequence[str] | None = None,
) -> NetworkAnalysis:
    """Trace ``model`` and report its prunable layers (conv filters, Linear units) and groups, the
    others with the reason, its learnables and the maximum possible learnables reduction.

    ``layer_names`` restricts pruning as in :class:`TaylorPrunableNetwork` (unknown names raise
    ``ValueError`` listing the valid ones).
    """
    pnet = TaylorPrunableNetwork(model, example_inputs, layer_names=layer_names, criterion="l1")
    graph, spaces = pnet.graph, pnet.graph.spaces
    selected = set(pnet.prunable_layer_names)
    group_ids = {name: g for g, names in enumerate(pnet.layer_groups) for name in names}
    layer_rows = []
    for name, role in graph.layers.items():
        root = spaces.find(role.out_layout[0].space)
        if name in selected:
            reason = ""
        elif spaces.fixed_reason(root) is not None:
            reason = spaces.fixed_reason(root)
        elif spaces.units(root) <= 1:
            reason = SINGLE_UNIT
        else:
            reason = NOT_SELECTED
        layer_rows.append(
            {
                "layer": name,
                "type": type(pnet.model.get_submodule(name)).__name__,
                "filters": sum(seg.size for seg in role.out_layout),
                "prunable": name in selected,
                "group": group_ids.get(name, -1),
                "reason": reason,
            }
        )
    layer_rows += _kept_whole_rows(pnet.model, graph.kept_whole, set(graph.layers))
    group_rows = [
        {"group": g, "layers": names, "units": units}
        for g, (names, units) in enumerate(zip(pnet.layer_groups, pnet.group_units, strict=True))
    ]
    return NetworkAnalysis(
        learnables=pnet.learnables,
        minimum_learnables=pnet.minimum_learnables(),
        layers=pd.DataFrame(layer_rows, columns=["layer", "type", "filters", "prunable", "group", "reason"]),
        groups=pd.DataFrame(group_rows, columns=["group", "layers", "units"]),
    )


def _kept_whole_rows(model: nn.Module, kept_whole: dict[str, str], analysed: set[str]) -> list[dict]:
    """A row for each conv and Linear inside a module kept whole (the analysis never saw them)."""
    rows = []
    for name, module in model.named_modules():
        whole = next((m for m in kept_whole if name == m or name.startswith(f"{m}.")), None)
        if whole is None or name in analysed or not isinstance(module, ops.CONV_MODULES + ops.LINEAR_MODULES):
            continue
        filters = module.out_channels if isinstance(module, ops.CONV_MODULES) else module.out_features
        inside = "" if whole == name else f"inside {whole}, "
        row = {"layer": name, "type": type(module).__name__, "filters": filters, "prunable": False, "group": -1}
        rows.append(row | {"reason": f"{inside}kept whole: {kept_whole[whole]}"})
    return rows
