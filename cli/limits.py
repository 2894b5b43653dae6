"""Limits that config.toml, the CLI and the UI share (kept light: --help imports it)."""

# The most neighbours one query may ask for.
MAX_K = 200
