"""save_pruned / load_pruned round-trip in a fresh process."""

import subprocess
import sys

import torch

from prune_core import TaylorPrunableNetwork
from prune_core.io import save_pruned
from prune_core.models import DigitsCNN


def test_round_trip_in_fresh_process(tmp_path):
    x = torch.randn(4, 1, 8, 8)
    pnet = TaylorPrunableNetwork(DigitsCNN(width=8), x[:1], criterion="l1")
    pnet.update_prunables(max_to_prune=10)
    small = pnet.to_module().eval()
    assert save_pruned(small, tmp_path / "pruned.pt2", x).is_file()
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(small(x), tmp_path / "expected.pt")
    script = (
        "import sys, torch; from prune_core.io import load_pruned; d = sys.argv[1]; "
        "m = load_pruned(d + '/pruned.pt2'); x = torch.load(d + '/x.pt', weights_only=True); "
        "torch.save(m(x), d + '/actual.pt'); assert m(x[:3]).shape == (3, 10); "
        "m.train(); m(x).sum().backward(); assert m.training and m.eval() is m and not m.training"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120)
    actual = torch.load(tmp_path / "actual.pt", weights_only=True)
    assert torch.equal(actual, torch.load(tmp_path / "expected.pt", weights_only=True))
