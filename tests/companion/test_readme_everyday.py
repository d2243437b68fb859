"""The README's "Everyday use" section (issue 12, point 7): it exists, and what it tells a user to type works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from companion.cli import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def everyday() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Everyday use\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "README has no 'Everyday use' section"
    return match.group(1)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_documented_completion_scripts_are_produced(shell: str):
    assert f"_HANDCUE_COMPLETE={shell}_source handcue" in everyday()
    result = CliRunner().invoke(cli, [], env={"_HANDCUE_COMPLETE": f"{shell}_source"}, prog_name="handcue")
    assert result.exit_code == 0
    assert "_HANDCUE_COMPLETE" in result.output


def test_the_documented_stdin_and_stdout_pipeline_works(tmp_path: Path):
    assert "handcue compile nausea-pc6 -o - | handcue inspect -" in everyday()
    runner = CliRunner()
    table = runner.invoke(cli, ["compile", "nausea-pc6", "-o", "-"]).stdout_bytes
    shown = runner.invoke(cli, ["inspect", "-"], input=table)
    assert shown.exit_code == 0 and shown.output.startswith("Nausea relief (PC6): 124 bytes")


def test_every_command_the_section_names_exists():
    commands = set(re.findall(r"(?:`|\$ |\| )handcue (?:-[qv] )?([a-z]+)", everyday()))
    assert {"config", "inspect", "compile", "scan", "status", "check"} <= commands
    assert commands <= set(cli.commands) | {"plot"} and "plot" in cli.commands
