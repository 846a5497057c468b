"""TaylorPrunableNetwork: simulate filter pruning with masks, score filters, extract the result."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prune_core import hooks, importance, surgery
from prune_core.capture import PointCapture
from prune_core.checks import as_input_tuple, positive_int
from prune_core.graph import ChannelGraph, trace_channels
from prune_core.module_state import collector_paused, copied
from prune_core.spaces import Layout, element_mask
from prune_core.taylor_scores import ScoreState, TaylorScoreSums


class TaylorPrunableNetwork(nn.Module):
    """A network whose conv filters are pruned by first-order Taylor importance.

    The wrapped model is traced once to find which conv filters can be removed exactly and
    which must go together (residual adds, depthwise and grouped convs, concatenations, channel
    gating). Pruning is simulated with masks; :meth:`to_module` returns the physically smaller
    network. The wrapper is an ``nn.Module``: fine-tune it with any optimizer over
    ``parameters()``.

    Taylor score (``criterion="taylor"``). The pruning point of a conv is its output, or the
    output of the BatchNorm that directly follows it. Where that output goes only to an
    ``nn.ReLU(inplace=True)``, the activation taken is the ReLU's output, which gives the same
    score (element by element, ``relu(a) * dL/drelu(a) == a * dL/da``) and lets the ReLU stay in
    place. For the activation ``a`` and gradient ``g = dL/da`` of shape ``(N, C, *spatial)`` of
    one mini-batch::

        s_b[c] = (1/N) * sum_n | mean_spatial(a[n, c] * g[n, c]) |

    ``update_score`` averages ``s_b`` over the mini-batches seen since the last
    ``update_prunables``. Channels are summed into pruning units (one filter, or one whole
    group of a grouped conv), each layer's unit scores are divided by their L2 norm over the
    layer's remaining units, and a coupled group's score is the sum (``group_reduction="sum"``)
    or the mean (``"mean"``) of its layers' normalised scores. ``"l1"`` uses the L1 norm of each
    filter's weights instead and ``"random"`` uniform noise; both go through the same
    normalisation and ignore ``update_score``.

    Args:
        model: any traceable ``nn.Module``; it is copied, never modified.
        example_inputs: a tensor or tuple of tensors for tracing (shapes matter, not values).
        layer_names: restrict pruning to these convs (and the convs coupled with them).
        criterion: ``"taylor"``, ``"l1"``, ``"random"`` or an :class:`importance.Criterion`.
        channel_multiple: each pruned group keeps a multiple of this many units (or all of
            them), so that the smaller convs keep the channel counts fast kernels are built for
            (8 suits CPU vector units and tensor cores). 1 keeps MATLAB's behaviour.
        group_reduction: ``"sum"`` or ``"mean"`` of a coupled group's layers' normalised scores.
            With ``"sum"`` a group of k convs (a ResNet stage's residual channels) scores about k
            times a single conv, so it is pruned last; ``"mean"`` ranks it on equal terms.
    """

    @collector_paused()
    def __init__(
        self,
        model: nn.Module,
        example_inputs: torch.Tensor | Sequence[torch.Tensor],
        layer_names: Sequence[str] | None = None,
        criterion: str | importance.Criterion = "taylor",
        channel_multiple: int = 1,
        group_reduction: str = "sum",
    ) -> None:
        super().__init__()
        self.criterion = criterion
        self.group_reduction = importance.check_group_reduction(group_reduction)
        positive_int("channel_multiple", channel_multiple)
        self.channel_multiple = channel_multiple
        self.model, inputs = copied(model), as_input_tuple(example_inputs)
        self.graph: ChannelGraph = trace_channels(self.model, inputs, pristine=model)
        self._groups = self._select_groups(layer_names)
        for i, root in enumerate(self._groups):
            self.register_buffer(f"keep_{i}", torch.ones(self.graph.spaces.units(root), dtype=torch.bool))
        self._layers = [name for name in self.graph.layers if self._groups_of(name)]
        self._point_dims = [self.graph.point_dims[name] for name in self._layers]
        self._install_hooks()
        self._points = PointCapture(self.model, self.graph, self._layers)
        self._points.find_overwritten(self.model, inputs, model, on_meta_tensors=self.graph.costly_forward)
        self.register_load_state_dict_post_hook(lambda module, _keys: module._refresh_masks())
        self._scores = TaylorScoreSums(self._point_dims)

    # -- structure ----------------------------------------------------------------------------

    def _select_groups(self, layer_names: Sequence[str] | None) -> list[int]:
        spaces = self.graph.spaces
        groups = {
            root: convs
            for root, convs in self.graph.producers().items()
            if spaces.fixed_reason(root) is None and spaces.units(root) > 1
        }
        if layer_names is None:
            return list(groups)
        if isinstance(layer_names, str):
            layer_names = [layer_names]
        valid = [name for name in self.graph.layers if any(name in c for c in groups.values())]
        unknown = [name for name in layer_names if name not in valid]
        if unknown:
            raise ValueError(
                f"layer_names contains {unknown}, which are not prunable convs of this model. "
                f"Valid layer names: {valid}."
            )
        return [root for root, convs in groups.items() if set(convs) & set(layer_names)]

    def _segment_groups(self, conv_name: str) -> list[int | None]:
        """The group of each segment of a layer's units (``None``: not pruned). A layer whose
        output is split has several segments, in one group or in several."""
        roots = [self.graph.spaces.find(seg.space) for seg in self.graph.layers[conv_name].out_layout]
        return [self._groups.index(root) if root in self._groups else None for root in roots]

    def _groups_of(self, conv_name: str) -> list[int]:
        return sorted({g for g in self._segment_groups(conv_name) if g is not None})

    def _install_hooks(self) -> None:
        consumers = {role.name: role for role in self.graph.layers.values() if role.groups == 1}
        self._consumer_layouts: dict[str, Layout] = {name: role.in_layout for name, role in consumers.items()}
        for name, role in consumers.items():
            hooks.install_input_mask(self.model.get_submodule(name), 1 if role.kind == "conv" else -1)
        for name, role in self.graph.masked_norms.items():
            hooks.install_norm_mask(self.model.get_submodule(name), role.dim, role.eps)
        self._refresh_masks()

    def _unit_masks(self) -> dict[int, torch.Tensor]:
        return {root: getattr(self, f"keep_{i}") for i, root in enumerate(self._groups)}

    def _refresh_masks(self) -> None:
        """Recompute the per-module channel masks from the per-group unit masks."""
        units = self._unit_masks()
        for name, layout in self._consumer_layouts.items():
            hooks.set_input_mask(self.model.get_submodule(name), element_mask(layout, self.graph.spaces, units))
        for name, role in self.graph.masked_norms.items():
            hooks.set_norm_mask(self.model.get_submodule(name), element_mask(role.layout, self.graph.spaces, units))

    # -- public properties --------------------------------------------------------------------

    @property
    def criterion(self) -> importance.Criterion:
        """How filters are ranked; set it by name (``"taylor"``, ``"l1"``, ``"random"``) or as a
        :class:`importance.Criterion`."""
        return self._criterion

    @criterion.setter
    def criterion(self, criterion: str | importance.Criterion) -> None:
        self._criterion = importance.check_criterion(criterion)

    @property
    def prunable_layer_names(self) -> list[str]:
        """Names of the convs whose filters can be pruned, in graph order."""
        return list(self._layers)

    @property
    def layer_groups(self) -> list[list[str]]:
        """The prunable convs of each coupled group (their filters are removed together)."""
        return [[conv for conv in self._layers if g in self._groups_of(conv)] for g in range(len(self._groups))]

    @property
    def group_units(self) -> list[int]:
        """Pruning units (filters, or whole channel groups) each group still keeps."""
        return [int(keep.sum()) for keep in self._unit_masks().values()]

    @property
    def num_prunables(self) -> int:
        """Filters (pruning units) that can still be removed: every group keeps at least one."""
        return sum(int(keep.sum()) - 1 for keep in self._unit_masks().values())

    @property
    def has_scores(self) -> bool:
        """Whether Taylor scores were accumulated since the last pruning step."""
        return self._scores.batches > 0

    def filter_masks(self) -> dict[str, torch.Tensor]:
        """Keep-mask over the filters of every prunable conv (True = kept)."""
        units = self._unit_masks()
        return {
            conv: element_mask(self.graph.layers[conv].out_layout, self.graph.spaces, units) for conv in self._layers
        }

    @property
    def learnables(self) -> int:
        """Learnable parameters of the network :meth:`to_module` would return now."""
        return surgery.count_learnables(self.model, self.graph, self._unit_masks())

    # -- forward ------------------------------------------------------------------------------

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def forward_with_activations(self, *args, **kwargs) -> tuple[object, list[torch.Tensor]]:
        """Forward pass that also returns one activation per pruning point (layer order).

        A point that only feeds an ``nn.ReLU(inplace=True)`` returns the ReLU's output (same scores).
        A point found overwritten in place for the first time (on a branch that runs in training
        mode only, say) is copied from then on, and the pass runs again.
        """
        out, acts, overwritten = self._points.run(self.model, *args, **kwargs)
        if overwritten:
            out, acts, overwritten = self._points.run(self.model, *args, **kwargs)
        if overwritten:
            raise RuntimeError(f"the activations of {sorted(overwritten)} were overwritten in place even when copied.")
        return out, acts

    # -- scoring and pruning ------------------------------------------------------------------

    def update_score(self, activations: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor | None]) -> None:
        """Accumulate Taylor scores from one mini-batch (a no-op for ``l1`` and ``random``)."""
        self._check_point_count("update_score", len(activations), len(gradients))
        if self.criterion.uses_gradients:
            self._scores.add(activations, gradients)

    def score_on_backward(self, activations: Sequence[torch.Tensor]) -> None:
        """Accumulate this mini-batch's Taylor scores during the next backward pass through ``activations``.

        The same scores as ``update_score(activations, their gradients)``, computed by a gradient
        hook on each activation as the gradient arrives: one ``loss.backward()`` gives the
        parameter gradients and the scores, without ``retain_grad`` copies of the activation
        gradients. An activation the backward pass never reaches adds zeros, as in ``update_score``.
        """
        self._check_point_count("score_on_backward", len(activations))
        if self.criterion.uses_gradients:
            self._scores.add_on_backward(activations)

    def score_state(self) -> ScoreState:
        """The accumulated Taylor score sums and their mini-batch count (for checkpoints)."""
        return self._scores.state()

    def load_score_state(self, state: ScoreState) -> None:
        """Continue accumulating from a :meth:`score_state`."""
        self._scores.load(state)

    def _check_point_count(self, method: str, *counts: int) -> None:
        """ValueError unless every sequence given to ``method`` has one entry per pruning point."""
        if any(count != len(self._layers) for count in counts):
            what = "activations and gradients" if len(counts) > 1 else "activations"
            raise ValueError(
                f"{method} expects {len(self._layers)} {what} (one per pruning point), "
                f"got {' and '.join(map(str, counts))}."
            )

    def layer_scores(self) -> dict[str, torch.Tensor]:
        """Raw importance of every filter of every prunable conv under the current criterion.

        For ``"taylor"`` this is the mini-batch average of ``s_b`` (see the class docstring).
        """
        accumulated = self._scores.means() if self.criterion.uses_gradients else [None] * len(self._layers)
        return {
            conv: self.criterion.filter_scores(self.model.get_submodule(conv), scores)
            for conv, scores in zip(self._layers, accumulated, strict=True)
        }

    def group_scores(self) -> list[torch.Tensor]:
        """Score of every unit of every prunable group: the sum or mean (``group_reduction``) of its
        layers' normalised scores."""
        units = self._unit_masks()
        totals = [torch.zeros(keep.numel()) for keep in units.values()]
        for conv, channel in self.layer_scores().items():
            for g, scores in self._unit_scores(conv, channel.float()).items():
                totals[g] += importance.normalized(scores, getattr(self, f"keep_{g}").cpu())
        if self.group_reduction == "mean":
            return [total / len(convs) for total, convs in zip(totals, self.layer_groups, strict=True)]
        return totals

    def _unit_scores(self, conv: str, channel: torch.Tensor) -> dict[int, torch.Tensor]:
        """A layer's per-channel scores summed into the units of each of its groups."""
        sizes = [seg.size for seg in self.graph.layers[conv].out_layout]
        totals: dict[int, torch.Tensor] = {}
        for g, part in zip(self._segment_groups(conv), channel.split(sizes), strict=True):
            if g is not None:
                n_units = getattr(self, f"keep_{g}").numel()
                totals[g] = totals.get(g, 0) + part.reshape(n_units, -1).sum(dim=1)
        return totals

    def update_prunables(self, max_to_prune: int = 8) -> int:
        """Mask up to ``max_to_prune`` lowest-scoring filters across all layers; reset scores.

        Returns the number of filters removed.
        """
        if not isinstance(max_to_prune, int) or max_to_prune < 1:
            raise ValueError(f"max_to_prune must be a positive integer, got {max_to_prune!r}.")
        ranked = self._rounded(self._ranked_units(limit=max_to_prune))
        self._remove(ranked)
        return len(ranked)

    def prune_to_learnables(self, max_learnables: int) -> int:
        """Remove the lowest-ranked filters (one ranking) until ``learnables <= max_learnables``.

        Stops early when nothing prunable is left. Resets the scores; returns the filters removed.
        """
        ranked = self._ranked_units(limit=self.num_prunables)
        masks = self._unit_masks()

        def learnables_after(k: int) -> int:
            trial = {root: keep.cpu().clone() for root, keep in masks.items()}
            roots = list(trial)
            for g, u in self._rounded(ranked[:k]):
                trial[roots[g]][u] = False
            return surgery.count_learnables(self.model, self.graph, trial)

        lo, hi = 0, len(ranked)  # smallest prefix that reaches the target (learnables fall with k)
        while lo < hi:
            mid = (lo + hi) // 2
            if learnables_after(mid) <= max_learnables:
                hi = mid
            else:
                lo = mid + 1
        removed = self._rounded(ranked[:lo])
        self._remove(removed)
        return len(removed)

    def minimum_learnables(self) -> int:
        """Learnables left at maximum compression (every prunable group down to
        ``min(channel_multiple, its units)`` units)."""
        fewest = {
            root: torch.arange(keep.numel()) < min(self.channel_multiple, keep.numel())
            for root, keep in self._unit_masks().items()
        }
        return surgery.count_learnables(self.model, self.graph, fewest)

    def _ranked_units(self, limit: int) -> list[tuple[int, int]]:
        alive = [keep.cpu() for keep in self._unit_masks().values()]
        return importance.rank_units(self.group_scores(), alive, limit)

    def _rounded(self, ranked: list[tuple[int, int]]) -> list[tuple[int, int]]:
        alive = [int(keep.sum()) for keep in self._unit_masks().values()]
        return importance.keep_multiples(ranked, alive, self.channel_multiple)

    def _remove(self, units: list[tuple[int, int]]) -> None:
        for g, u in units:
            getattr(self, f"keep_{g}")[u] = False
        self._masks_changed()

    def _masks_changed(self) -> None:
        """After the unit masks change: recompute the channel masks and reset the scores."""
        self._refresh_masks()
        self._scores = TaylorScoreSums(self._point_dims)

    # -- compaction ---------------------------------------------------------------------------

    def unit_masks(self) -> list[torch.Tensor]:
        """A copy of every prunable group's keep-mask over its units (True = kept)."""
        return [keep.detach().cpu().clone() for keep in self._unit_masks().values()]

    def set_unit_masks(self, masks: Sequence[torch.Tensor]) -> None:
        """Restore keep-masks taken with :meth:`unit_masks`; resets the scores."""
        with torch.no_grad():
            for keep, mask in zip(self._unit_masks().values(), masks, strict=True):
                keep.copy_(mask)
        self._masks_changed()

    def compacted(self, example_inputs: torch.Tensor | Sequence[torch.Tensor]) -> TaylorPrunableNetwork:
        """A new prunable network over :meth:`to_module` (pruned filters physically removed).

        It keeps this network's criterion and channel multiple; its prunable convs are those of
        this network's groups that keep more than one unit. Its units are this network's kept
        units, in order (see :meth:`record_pruning_of`).
        """
        layers = [
            conv
            for convs, units in zip(self.layer_groups, self.group_units, strict=True)
            if units > 1
            for conv in convs
        ]
        return TaylorPrunableNetwork(
            self.to_module(),
            example_inputs,
            layer_names=layers,
            criterion=self.criterion,
            channel_multiple=self.channel_multiple,
            group_reduction=self.group_reduction,
        )

    def record_pruning_of(self, compact: TaylorPrunableNetwork) -> None:
        """Mask here the units masked in ``compact``, a :meth:`compacted` copy of this network;
        resets the scores, as every pruning step does."""
        with torch.no_grad():
            for g, (convs, keep) in enumerate(zip(compact.layer_groups, compact._unit_masks().values(), strict=True)):
                segment = compact._segment_groups(convs[0]).index(g)  # the same segment of the same layer here
                mine = getattr(self, f"keep_{self._segment_groups(convs[0])[segment]}")
                kept = mine.nonzero().flatten()
                mine[kept[~keep.to(mine.device)]] = False
        self._masks_changed()

    def kept_slices(self) -> surgery.TensorSlices:
        """``(dim, kept indices)`` of every tensor :meth:`to_module` slices, keyed by this wrapper's
        parameter and buffer names (``"model.<module>.<attr>"``)."""
        return {f"model.{key}": slices for key, slices in surgery.kept_slices(self.graph, self._unit_masks()).items()}

    # -- extraction ---------------------------------------------------------------------------

    def to_module(self) -> nn.Module:
        """A plain ``nn.Module`` with the pruned filters physically removed (no hooks or masks)."""
        clone = copied(self.model)
        hooks.remove_all(clone)
        surgery.extract(clone, self.graph, self._unit_masks())
        return clone
