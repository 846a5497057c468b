"""Where benchmark reports live, and how a speed-up report's rows are read (shared by the
benchmarks that write reports and the figures that draw them)."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def speedup_variants(row: dict) -> list[tuple[str, dict]]:
    """A speed-up report's network row as ``(suffix, cells)``: unrounded, then each ``channel_multiple_<m>``."""
    prefix = "channel_multiple_"
    rounded = [(f" x{key.removeprefix(prefix)}", cells) for key, cells in row.items() if key.startswith(prefix)]
    return [("", row), *rounded]
