"""lookalike as a library: a catalogue opened from its config, for the CLI, the UI and HTTP."""
