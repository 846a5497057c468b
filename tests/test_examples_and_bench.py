"""The main job and the benchmark scripts run (tiny settings) so they cannot rot."""

from bench import scoring_overhead
from prune_core.examples import digits


def test_digits_example_prunes_and_reports(capsys):
    digits.main(["--pruning-iterations", "2", "--max-to-prune", "4"])
    out = capsys.readouterr().out
    assert "iteration  2: removed 4 filters" in out
    assert "pruned network:" in out


def test_scoring_overhead_benchmark_smoke():
    report = scoring_overhead.main(["--smoke"])
    row = report["results"]["digits_cnn"]
    assert row["plain_ms"] > 0 and row["scoring_ms"] > 0
