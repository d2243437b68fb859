"""``handcue card --strength 70`` prints the wearer's cue strength on the card (Markdown and HTML); without it, nothing."""

from __future__ import annotations

import re
import subprocess
import sys

from companion.card import routine_card
from companion.routine import load_routine


def test_card_carries_the_cue_strength_when_given():
    routine = load_routine("nausea-pc6")
    markdown = routine_card(routine, "md", 70)
    [facts] = [line for line in markdown.splitlines() if line.startswith("**Total:**")]
    assert facts.endswith(" · **Cue strength:** 70 %")
    html = routine_card(routine, "html", 35)
    assert "<li><b>Cue strength:</b> 35 %</li></ul>" in html
    assert re.sub(r"<[^>]+>", "", html).count("Cue strength: 35 %") == 1
    for fmt in ("md", "html"):
        assert "strength:" not in routine_card(routine, fmt).replace("</b>", "").lower()


def test_card_cli_prints_the_line_and_refuses_a_strength_no_band_plays():
    cli = [sys.executable, "-c", "from companion.cli import main; main()", "card", "desk-break", "-o", "-"]
    printed = subprocess.run([*cli, "--strength", "70"], capture_output=True, text=True, timeout=30, check=False)
    assert printed.returncode == 0, printed.stderr
    assert "**Cue strength:** 70 %" in printed.stdout
    refused = subprocess.run([*cli, "--strength", "15"], capture_output=True, text=True, timeout=30, check=False)
    assert refused.returncode == 2 and "15" in refused.stderr and refused.stdout == ""
