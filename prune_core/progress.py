"""Terminal output of compress_network, per verbosity level."""

from __future__ import annotations

import sys

from prune_core.results import PruningInfo

VERBOSITY = ("summary", "pruning", "training", "off")


class Printer:
    """Prints per verbosity level: summary < pruning < training."""

    _LEVELS = {"off": 0, "summary": 1, "pruning": 2, "training": 3}

    def __init__(self, verbosity: str, frequency: int) -> None:
        self.level, self.frequency = self._LEVELS[verbosity], frequency
        self._bar_open = False

    def line(self, text: str, level: str = "pruning") -> None:
        if self.level >= self._LEVELS[level]:
            print(text, flush=True)

    def training(self, row: dict) -> None:
        if self.level >= 3 and row["iteration"] % self.frequency == 0:
            extras = "".join(
                f", {k} {row[k]:.4g}"
                for k in row
                if k not in ("iteration", "pruning_iteration", "phase", "epoch", "loss", "learn_rate")
            )
            what = "final fine-tuning" if row["phase"] == "final" else f"pruning {row['pruning_iteration']}"
            print(
                f"  fine-tuning iteration {row['iteration']} ({what}, "
                f"epoch {row['epoch']}): loss {row['loss']:.4g}{extras}",
                flush=True,
            )

    def progress(self, reduction: float, goal: float, iteration: int) -> None:
        """A one-line progress bar at "summary" level, on terminals only."""
        if self.level == 1 and sys.stdout.isatty():
            done = min(reduction / goal, 1.0) if goal > 0 else 1.0
            bar = "#" * round(30 * done) + "." * (30 - round(30 * done))
            print(
                f"\rPruning [{bar}] {100 * reduction:.1f}% of {100 * goal:.1f}% (iteration {iteration})",
                end="",
                flush=True,
            )
            self._bar_open = True

    def summary(self, info: PruningInfo) -> None:
        if self._bar_open:
            print()
        if self.level >= 1:
            names = ",".join(f'"{name}"' for name in info.pruned_layers)
            print(f"Compressed network has {100 * info.reduction:.1f}% fewer learnable parameters.")
            print(f"Pruning compressed {len(info.pruned_layers)} layers: {names}")
            print(f"Stop reason: {info.stop_reason}", flush=True)
