"""The main job and the benchmark scripts run (tiny settings) so they cannot rot."""

from bench import scoring_overhead
from prune_core.examples import digits


def test_digits_example_prunes_and_reports(capsys):
    digits.main(["--goal", "0.3", "--increment", "0.15", "--baseline-epochs", "2"])
    out = capsys.readouterr().out
    assert "Pruning iteration 2:" in out
    assert "fewer learnable parameters." in out and "Stop reason: Learnables reduction goal reached." in out


def test_scoring_overhead_benchmark_smoke():
    report = scoring_overhead.main(["--smoke"])
    row = report["results"]["digits_cnn"]
    assert row["plain_ms"] > 0 and row["scoring_ms"] > 0
