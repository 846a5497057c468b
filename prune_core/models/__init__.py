"""Built-in reference networks."""

from prune_core.models.small import DigitsCNN, SequenceCNN

__all__ = ["DigitsCNN", "SequenceCNN"]
