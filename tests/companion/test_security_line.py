"""What `handcue info` (and the Python API's ``security_line``) says about who may command a band, from the
pairing state the BLE transport read: a read-only session's unencrypted link cannot say "this one is paired"."""

from __future__ import annotations

import asyncio

import pytest

from companion.ble.pairing import security_line
from companion.transport.ble import BleTransport
from protocol.constants import PairingState


def line(needs_trust: bool, state: PairingState | None) -> str:
    transport = BleTransport("ble:HandCue-1A2B", "HandCue-1A2B", needs_trust=needs_trust)
    transport.pairing_state = state  # as the background read left it (no read pending)
    return asyncio.run(security_line(transport))


def test_a_read_only_session_on_a_paired_band_does_not_claim_this_computer_is_not_paired():
    said = line(needs_trust=False, state=PairingState.PROTECTED)
    assert "this link is not encrypted" in said and "this one is not" not in said


@pytest.mark.parametrize(("state", "expected"), [
    (PairingState.PROTECTED, "this one is not (press its button"),
    (PairingState.PROTECTED | PairingState.TRUSTED, "this one is paired"),
    (PairingState(0), "is not paired with any device"),
])
def test_a_trusted_session_says_whether_this_computer_is_paired(state: PairingState, expected: str):
    assert expected in line(needs_trust=True, state=state)


def test_a_read_only_session_on_an_open_band_says_it_is_open():
    assert "is not paired with any device" in line(needs_trust=False, state=PairingState(0))
