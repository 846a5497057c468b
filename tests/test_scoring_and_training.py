"""Taylor scores match the formula; the masked network trains; state and devices behave."""

import pytest
import torch
import torch.nn.functional as F

from prune_core import TaylorPrunableNetwork, importance
from prune_core.models import DigitsCNN, SequenceCNN
from tests.helpers import assert_exact, prune_fraction


def _reference_scores(model, batches):
    """Per-filter Taylor scores by plain autograd on the BatchNorm outputs of the original model."""
    bns = {"features.0": model.features[1], "features.3": model.features[4], "features.7": model.features[8]}
    totals = {name: 0 for name in bns}
    for x, y in batches:
        acts = {}
        handles = [
            bn.register_forward_hook(lambda m, i, o, n=n, acts=acts: acts.__setitem__(n, o)) for n, bn in bns.items()
        ]
        loss = F.cross_entropy(model(x), y)
        for h in handles:
            h.remove()
        grads = torch.autograd.grad(loss, [acts[n] for n in bns])
        for (name, a), g in zip(acts.items(), grads, strict=True):
            per_example = (a * g).mean(dim=(2, 3)).abs()  # (N, C)
            totals[name] = totals[name] + per_example.mean(dim=0)
    return {name: total / len(batches) for name, total in totals.items()}


def test_taylor_scores_match_autograd_reference():
    model = DigitsCNN(width=4).train()
    batches = [(torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,))) for _ in range(3)]
    pnet = TaylorPrunableNetwork(model, batches[0][0]).train()
    for x, y in batches:
        out, acts = pnet.forward_with_activations(x)
        grads = torch.autograd.grad(F.cross_entropy(out, y), acts)
        pnet.update_score(acts, grads)
    expected = _reference_scores(model, batches)
    got = pnet.layer_scores()
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-8)
    # ranking key: each layer L2-normalised (each group here is one layer)
    for score, name in zip(pnet.group_scores(), expected, strict=True):
        torch.testing.assert_close(score, expected[name] / expected[name].norm(), rtol=1e-5, atol=1e-8)


def test_update_prunables_needs_scores_for_taylor():
    pnet = TaylorPrunableNetwork(DigitsCNN(width=4), torch.randn(1, 1, 8, 8))
    with pytest.raises(RuntimeError, match="update_score"):
        pnet.update_prunables()
    out, acts = pnet.forward_with_activations(torch.randn(3, 1, 8, 8))
    pnet.update_score(acts, torch.autograd.grad(out.sum(), acts))
    assert pnet.update_prunables(max_to_prune=2) == 2
    with pytest.raises(RuntimeError, match="update_score"):
        pnet.update_prunables()  # scores are reset after pruning


def test_global_ranking_removes_the_lowest_scores_and_never_the_last_filter():
    model = DigitsCNN(width=4)
    with torch.no_grad():
        model.features[3].weight[[1, 5]] *= 1e-3  # two weak filters in the second conv
    pnet = TaylorPrunableNetwork(model, torch.randn(1, 1, 8, 8), criterion="l1")
    assert pnet.update_prunables(max_to_prune=2) == 2
    assert pnet.to_module().features[3].out_channels == 6
    assert not pnet.keep_1[[1, 5]].any()
    removed = pnet.update_prunables(max_to_prune=1000)
    assert removed == 3 + 5 + 7 and pnet.num_prunables == 0
    small = pnet.to_module()
    assert [small.features[i].out_channels for i in (0, 3, 7)] == [1, 1, 1]


class LargestWeight(importance.Criterion):
    """A criterion defined outside the engine: a filter is as important as its largest weight."""

    name = "max-abs"

    def filter_scores(self, layer, accumulated):
        return layer.weight.detach().abs().flatten(1).amax(dim=1).cpu()


def test_a_criterion_defined_outside_the_engine_ranks_the_filters():
    model = DigitsCNN(width=4)
    weight = model.features[3].weight
    with torch.no_grad():
        weight[2], weight[6] = 0.05, 0.04  # many small weights: large in L1, small at their largest
        weight[4] = 0.0
        weight[4, 0, 0, 0] = 1.0  # one large weight: the smallest L1 norm, the largest weight
    assert set(importance.l1_filter_norms(weight).argsort()[:2].tolist()) == {4, 6}  # what L1 would remove
    pnet = TaylorPrunableNetwork(model, torch.randn(1, 1, 8, 8), criterion=LargestWeight())
    assert pnet.update_prunables(max_to_prune=2) == 2  # no scores needed: it does not use gradients
    assert not pnet.keep_1[[2, 6]].any() and pnet.keep_1[4] and pnet.keep_1.sum() == 6
    pnet.criterion = "taylor"  # switched by name, as a benchmark does after an L1 pruning step
    assert pnet.criterion.uses_gradients and pnet.criterion is importance.CRITERIA["taylor"]
    with pytest.raises(ValueError, match="criterion='magic'"):
        pnet.criterion = "magic"


def test_masked_network_trains_without_reviving_filters_and_keeps_trained_weights():
    x, y = torch.randn(16, 1, 40), torch.randint(0, 10, (16,))
    pnet = TaylorPrunableNetwork(SequenceCNN(width=8), x[:2], criterion="l1")
    prune_fraction(pnet, 0.4, step=3)
    opt = torch.optim.SGD(pnet.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    before = {k: v.clone() for k, v in pnet.state_dict().items()}
    pnet.train()
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(pnet(x), y).backward()
        opt.step()
    assert not torch.equal(before["model.features.0.weight"], pnet.model.features[0].weight)
    small = assert_exact(pnet, x)
    kept = torch.nonzero(pnet.keep_0).flatten()
    torch.testing.assert_close(small.features[0].weight, pnet.model.features[0].weight[kept])
    torch.testing.assert_close(small.features[1].running_mean, pnet.model.features[1].running_mean[kept])


def test_is_a_module_with_state_dict_round_trip():
    model, x = DigitsCNN(width=4), torch.randn(3, 1, 8, 8)
    pnet = TaylorPrunableNetwork(model, x, criterion="random")
    prune_fraction(pnet, 0.5, step=2)
    assert any(k.startswith("keep_") for k in pnet.state_dict())
    fresh = TaylorPrunableNetwork(model, x, criterion="random")
    fresh.load_state_dict(pnet.state_dict())
    assert fresh.learnables == pnet.learnables and fresh.num_prunables == pnet.num_prunables
    pnet.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), pnet(x))
    assert_exact(fresh, x)


def test_update_score_checks_the_number_of_activations():
    pnet = TaylorPrunableNetwork(DigitsCNN(width=4), torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="expects 3 activations"):
        pnet.update_score([torch.ones(1, 4, 8, 8)], [torch.ones(1, 4, 8, 8)])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_runs_on_device(device):
    x, y = torch.randn(8, 1, 8, 8, device=device), torch.randint(0, 10, (8,), device=device)
    pnet = TaylorPrunableNetwork(DigitsCNN(width=4), x[:1].cpu()).to(device)
    out, acts = pnet.forward_with_activations(x)
    pnet.update_score(acts, torch.autograd.grad(F.cross_entropy(out, y), acts))
    pnet.update_prunables(max_to_prune=3)
    small = assert_exact(pnet, x)
    assert next(small.parameters()).device.type == device
    assert small.to("cpu")(x.cpu()).shape == (8, 10)


class _InPlaceBlock(torch.nn.Module):
    def __init__(self, inplace: bool, activation: type[torch.nn.Module] = torch.nn.SiLU):
        super().__init__()
        self.inplace = inplace
        self.conv1 = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(6)
        self.relu = activation(inplace=inplace)
        self.conv2 = torch.nn.Conv2d(6, 6, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(6)
        self.head = torch.nn.Linear(6, 4)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(x))
        if self.inplace:
            out += x
        else:
            out = out + x
        return self.head(out.mean((2, 3)))


def test_in_place_operations_after_a_pruning_point_do_not_change_the_scores():
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
    scores = []
    for inplace in (False, True):
        torch.manual_seed(1)
        pnet = TaylorPrunableNetwork(_InPlaceBlock(inplace), x).train()
        out, acts = pnet.forward_with_activations(x)
        pnet.update_score(acts, torch.autograd.grad(F.cross_entropy(out, y), acts))
        scores.append(pnet.layer_scores())
        assert pnet.model.relu.inplace is inplace  # restored after capture
    for name in scores[0]:
        torch.testing.assert_close(scores[1][name], scores[0][name])


def test_an_in_place_relu_alone_after_a_point_stays_in_place_and_gives_the_same_scores():
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
    results = []
    for inplace in (False, True):
        torch.manual_seed(1)
        pnet = TaylorPrunableNetwork(_InPlaceBlock(inplace, torch.nn.ReLU), x).train()
        in_place_at_call = []
        pnet.model.relu.register_forward_pre_hook(
            lambda module, _args, calls=in_place_at_call: calls.append(module.inplace)
        )
        out, acts = pnet.forward_with_activations(x)
        assert in_place_at_call == [inplace]  # not switched off while capturing
        assert bool((acts[0] >= 0).all()) is inplace  # the ReLU's output is the activation taken
        pnet.score_on_backward(acts)
        F.cross_entropy(out, y).backward()
        results.append((pnet.layer_scores(), [p.grad for p in pnet.parameters()]))
    (scores, grads), (in_place_scores, in_place_grads) = results
    for name in scores:
        torch.testing.assert_close(in_place_scores[name], scores[name], rtol=0, atol=0)
    for grad, in_place_grad in zip(grads, in_place_grads, strict=True):
        torch.testing.assert_close(in_place_grad, grad, rtol=0, atol=0)


@pytest.mark.parametrize("inplace", [False, True])  # True: the residual add overwrites a point (copied)
def test_score_on_backward_gives_update_scores_scores_and_the_same_parameter_gradients(inplace):
    batches = [(torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))) for _ in range(3)]
    torch.manual_seed(1)
    model = _InPlaceBlock(inplace)
    hooked = TaylorPrunableNetwork(model, batches[0][0]).train()
    explicit = TaylorPrunableNetwork(model, batches[0][0]).train()
    for x, y in batches:
        out, acts = explicit.forward_with_activations(x)
        for act in acts:
            act.retain_grad()
        F.cross_entropy(out, y).backward()
        explicit.update_score(acts, [act.grad for act in acts])

        out, acts = hooked.forward_with_activations(x)
        hooked.score_on_backward(acts)
        F.cross_entropy(out, y).backward()
    expected, got = explicit.layer_scores(), hooked.layer_scores()
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0)
    for (name, p), q in zip(explicit.named_parameters(), hooked.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="score_on_backward expects 2 activations"):
        hooked.score_on_backward(acts[:1])


def test_score_on_backward_adds_zeros_for_a_point_the_backward_pass_does_not_reach():
    pnet = TaylorPrunableNetwork(DigitsCNN(width=4), torch.randn(1, 1, 8, 8)).train()
    out, acts = pnet.forward_with_activations(torch.randn(3, 1, 8, 8))
    pnet.score_on_backward(acts)
    acts[1].sum().backward()  # reaches the first two points only
    scores = list(pnet.layer_scores().values())
    assert scores[0].abs().sum() > 0 and scores[1].abs().sum() > 0
    assert torch.equal(scores[2], torch.zeros(8))
