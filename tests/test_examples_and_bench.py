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


def test_speedup_benchmark_smoke():
    from bench import speedup

    report = speedup.main(["--smoke"])
    for name in speedup.MODELS:
        row = report["results"][name]
        assert 0 < row["learnables_ratio"] < 1
        assert 0 < row["batch_1"]["macs_ratio"] < 1 and row["batch_1"]["latency_ratio"] > 0


def test_mnist1d_benchmark_smoke():
    from bench import mnist1d

    results = mnist1d.main(["anchor", "--smoke"])
    run = results["runs"][0]
    assert run["reduction"] >= 0.8 - 1e-9 and 0 <= run["pruned_test_accuracy"] <= 100
    assert results["summary"]["runs"] == 1


def test_torch_pruning_peer_benchmark_smoke():
    from bench import peer_torch_pruning

    results = peer_torch_pruning.main(["--smoke", "--goal", "0.5"])
    run = results["runs"][0]
    ours, peer = run["ours"], run["torch_pruning"]
    assert ours["reduction"] >= 0.5 - 1e-9
    assert abs(peer["learnables"] - ours["learnables"]) <= 0.1 * ours["learnables"]  # matched by bisection


def test_sweep_overhead_benchmark_smoke():
    from bench import sweep_overhead

    results = sweep_overhead.main(["--smoke"])
    for key in ("two_concurrent", "one_at_a_time"):
        run = results[key]
        assert run["trials"] == 2 and run["failed"] == 0
        assert 0 < run["compress_s_mean"] < run["trial_s_mean"] < run["wall_s"]
    assert results["throughput_gain"] > 0
