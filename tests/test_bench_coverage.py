"""The prunability matrix benchmark records what it measures, and failures as outcomes."""

import json

import pytest
import torch
import torchvision
from torch import nn

from bench import coverage


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the models are tiny, and a shared CPU makes more threads slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def test_record_of_a_model_that_prunes_exactly():
    model = torchvision.models.squeezenet1_1(num_classes=10)
    rec = coverage.measure("torchvision", "squeezenet1_1", model, torch.randn(2, 3, 64, 64))
    assert rec["outcome"] == "ok" and rec["errors"] == {}
    assert rec["traced"] is True and rec["analysis_s"] > 0
    assert rec["faithful_state"] and rec["faithful_eval"] and rec["faithful_train"] and rec["faithful"] is True
    assert rec["prunable_units"] > 0 and rec["prunable_layers"] > 0 and 0.5 < rec["max_reduction"] < 1
    assert rec["exact"] is True and rec["exact_error"] < coverage.TOLERANCE and rec["learnables_match"] is True
    assert rec["pruned_units"] > 0 and 0 < rec["pruned_reduction"] < 1
    assert isinstance(rec["tp_runnable"], bool)


def test_a_model_that_fails_is_a_recorded_outcome():
    rec = coverage.measure("test", "broken", Broken(), torch.randn(2, 3, 8, 8))
    assert rec["traced"] is False and "boom" in rec["errors"]["trace"]
    assert rec["faithful"] is None and rec["exact"] is None
    assert rec["tp_runnable"] is False and "boom" in rec["tp_error"]
    assert "**no**" in coverage.model_row(rec)


def test_a_timeout_is_a_recorded_outcome(tmp_path, capsys):
    out = tmp_path / "coverage_test.json"
    coverage.main(["--models", "torchvision:resnet18", "--timeout", "0.5", "--out", str(out)])
    report = json.loads(out.read_text())
    (rec,) = report["results"]["records"]
    assert rec["outcome"] == "timeout" and rec["traced"] is None and rec["wall_s"] < 30
    assert report["results"]["command"].endswith("--timeout 0.5 --out " + str(out))
    assert {"cpu_count", "torch", "date"} <= set(report) and report["results"]["platform"]
    summary = out.with_suffix(".md").read_text()
    assert "| torchvision | 1 | 0 | 0 | 0 | 0 | 0 | 1 | 0 | 0 |" in summary and summary in capsys.readouterr().out


def test_the_timm_sample_is_known_to_timm_and_broad():
    import timm

    names = [name for family in coverage.TIMM_MODELS.values() for name in family]
    assert len(names) == len(set(names)) >= 60 and len(coverage.TIMM_MODELS) >= 30
    assert set(names) <= set(timm.list_models())


def test_torch_pruning_timing_out_leaves_our_record_intact(monkeypatch):
    ours = coverage.blank("timm", "swin") | {"outcome": "ok", "traced": True, "exact": True}

    def fake_part(spec, part, timeout, threads):
        if part == "engine":
            return dict(ours)
        return coverage.blank("timm", "swin") | {"outcome": "timeout", "errors": {"process": "killed after 9 s"}}

    monkeypatch.setattr(coverage, "run_part", fake_part)
    rec = coverage.run_one("timm:swin", timeout=9)
    assert rec["outcome"] == "ok" and rec["traced"] is True and rec["exact"] is True
    assert rec["tp_runnable"] is False and rec["tp_error"] == "timeout: killed after 9 s"


def test_merge_replaces_only_the_models_run_again(monkeypatch, tmp_path):
    runs = iter(range(100))
    monkeypatch.setattr(
        coverage,
        "run_one",
        lambda spec, timeout, threads, peer_timeout, peer=True: (
            coverage.blank(*spec.split(":"))
            | {"outcome": "ok", "params": next(runs), "wall_s": 0.0, "tp_runnable": peer or None}
        ),
    )
    out = tmp_path / "coverage_merge.json"
    coverage.main(["--models", "timm:a", "timm:b", "--out", str(out)])
    coverage.main(["--models", "timm:b", "timm:c", "--out", str(out), "--merge"])
    results = json.loads(out.read_text())["results"]
    assert [(r["name"], r["params"]) for r in results["records"]] == [("a", 0), ("b", 2), ("c", 3)]
    assert results["command"].count("bench.coverage") == 2 and "; then " in results["command"]
    coverage.main(["--models", "timm:a", "timm:d", "--out", str(out), "--resume"])  # only d is new
    assert [(r["name"], r["params"]) for r in json.loads(out.read_text())["results"]["records"]] == [
        ("a", 0), ("b", 2), ("c", 3), ("d", 4)
    ]  # fmt: skip
    coverage.main(["--models", "timm:b", "--out", str(out), "--engine-only"])  # ours again, the peer's fields kept
    b = next(r for r in json.loads(out.read_text())["results"]["records"] if r["name"] == "b")
    assert (b["params"], b["tp_runnable"]) == (5, True)
