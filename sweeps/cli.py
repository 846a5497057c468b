"""``prune-sweep``: the Hydra entry point (config in ``conf/``; every value overridable on the command line)."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweeps.config import ConfigError
from sweeps.names import CONFIG_DIR, renamed_overrides
from sweeps.overrides import check_command_line
from sweeps.tracking import TrackingUnavailable


def _plain(cfg: DictConfig) -> dict:
    """The config resolved on the driver (Hydra interpolations do not resolve inside Ray workers)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"config key {key!r} has no value ({type(err).__name__}); set it, e.g. {key}=...") from None


def _print_outcome(outcome) -> None:
    from sweeps.console import print_outcome

    print_outcome(outcome)
    if outcome.failed_trials:
        print(
            f"{outcome.failed_trials} trial(s) failed; finish them with: prune-sweep resume={outcome.folder}",
            file=sys.stderr,
        )


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def _run(cfg: DictConfig) -> None:
    from sweeps.runner import run_sweep

    try:
        outcome = run_sweep(_plain(cfg))
    except (ConfigError, TrackingUnavailable) as err:
        _fail(err)
    _print_outcome(outcome)
    if outcome.failed_trials:
        sys.exit(1)


def _fail(err: ConfigError | TrackingUnavailable) -> NoReturn:
    """A user or environment error: one paragraph, no traceback, exit 2 or 3 (HYDRA_FULL_ERROR=1 raises it)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    invalid = isinstance(err, ConfigError)
    print(f"prune-sweep: {'invalid configuration: ' if invalid else ''}{err}", file=sys.stderr)
    sys.exit(2 if invalid else 3)


def main() -> None:
    """``prune-sweep``: the command line is checked (one paragraph, exit 2, before any work), then Hydra runs it."""
    sys.argv[1:] = renamed_overrides(sys.argv[1:])
    try:
        check_command_line(sys.argv[1:], _run, CONFIG_DIR)
    except ConfigError as err:
        _fail(err)
    _run()


if __name__ == "__main__":
    main()
