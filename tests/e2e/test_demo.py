"""The README's main job: `handcue demo`, over serial and over BLE, as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("transport", [[], ["--ble"]], ids=["serial", "ble"])
def test_demo_uploads_plays_and_summarises(transport):
    result = subprocess.run(
        [sys.executable, "-c", "from companion.cli import main; main()", "demo", "--speed", "2000", *transport],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "uploaded 279 bytes" in result.stdout
    assert "finished after 18 min 30 s (75 cues)" in result.stdout
    assert "summary: 9 steps (50 plays), 75 cues, routine 18 min 30 s" in result.stdout
    assert "Traceback" not in result.stderr
