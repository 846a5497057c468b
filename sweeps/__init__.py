"""Sweeps of pruning hyperparameters: Hydra configs, Ray Tune trials on prune_core, MLflow records.

The command line is ``prune-sweep`` (``sweeps.cli``); from Python, compose a config (see
``conf/``) and call :func:`sweeps.runner.run_sweep`.
"""
