"""Hydra + Ray Tune + MLflow pruning sweeps.

Not implemented yet: this package is a placeholder so that the layout is in place. It exposes
nothing; ``prune-sweep`` does not exist until the sweeps land.
"""
