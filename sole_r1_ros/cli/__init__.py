"""Command-line entry points: ``score_bag`` and ``sole-r1-score``."""
