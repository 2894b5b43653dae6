"""The systemd unit in contrib/ does what docs/operations.md says it does."""

from __future__ import annotations

import configparser
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "lookalike.service"


def test_systemd_unit_restarts_on_failure_and_stops_with_sigterm():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(UNIT)
    service = unit["Service"]
    assert service["ExecStart"].split()[1:] == ["run", "--config", "%h/lookalike/config.toml"]
    assert service["ExecStart"].split()[0] == "%h/lookalike/.venv/bin/lookalike"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert unit["Install"]["WantedBy"] == "default.target"
