"""The README says what the code does: its command table names every command with every
option it has (except --config and --offline, said once above the table), and its guarantee
table names tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

import click

from lookalike.cli.main import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SAID_ONCE = {"--config", "--offline", "--help"}


def documented_commands() -> dict[str, str]:
    """command name -> its row's synopsis, from the README's command table."""
    rows = re.findall(r"^\| `lookalike (\w+)([^`]*)` \|", README, re.MULTILINE)
    return {name: synopsis for name, synopsis in rows}


def test_the_command_table_names_every_command_and_option():
    table = documented_commands()
    assert set(table) == set(cli.commands)
    for name, command in cli.commands.items():
        options = {opt for param in command.params if isinstance(param, click.Option)
                   for opt in param.opts if opt.startswith("--")}
        for option in options - SAID_ONCE:
            assert option in table[name], f"README: lookalike {name} lacks {option}"


def test_the_guarantee_table_names_tests_that_exist():
    tests = Path(__file__).resolve().parent
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", README)
    assert len(named) > 30
    for module, test in named:
        assert re.search(rf"^def {test}\(", (tests / module).read_text(), re.MULTILINE), (
            f"README names {module}::{test}, which does not exist")
