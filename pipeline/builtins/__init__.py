"""lookalike."""
