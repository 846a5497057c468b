"""``prune-sweep``: the Hydra entry point (config in ``conf/``; every value overridable on the command line)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweeps.config import ConfigError
from sweeps.tracking import TrackingUnavailable

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _plain(cfg: DictConfig) -> dict:
    """The config resolved on the driver (Hydra interpolations do not resolve inside Ray workers)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"config key {key!r} has no value ({type(err).__name__}); set it, e.g. {key}=...") from None


def _print_outcome(outcome) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 40):
        print("\nTrials:")
        print(outcome.table.drop(columns=["run_id"]).to_string(index=False))
        print("\nPareto front (fewest learnables for the accuracy):")
        print(outcome.front[["trial", "learnables", "reduction", "val_accuracy"]].to_string(index=False))
    uri = outcome.tracking_uri
    command = f"open {uri}" if uri.startswith("http") else f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1"
    print(f"\nSweep folder: {outcome.folder}")
    print(f"MLflow: {command}")
    if outcome.failed_trials:
        print(
            f"{outcome.failed_trials} trial(s) failed; finish them with: prune-sweep resume={outcome.folder}",
            file=sys.stderr,
        )


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from sweeps.runner import run_sweep

    try:
        outcome = run_sweep(_plain(cfg))
    except (ConfigError, TrackingUnavailable) as err:  # user or environment errors: one paragraph, no traceback
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        invalid = isinstance(err, ConfigError)
        print(f"prune-sweep: {'invalid configuration: ' if invalid else ''}{err}", file=sys.stderr)
        sys.exit(2 if invalid else 3)
    _print_outcome(outcome)
    if outcome.failed_trials:
        sys.exit(1)


if __name__ == "__main__":
    main()
