"""The band's button in the simulator: signals (and keys) instead of a finger.

* a press (``SIGUSR1``, or the key ``p`` on the simulator's console)
  acknowledges the cue the band repeats when it waits for an acknowledgement
  (SPEC.md §12.10); otherwise it opens the pairing window for 60 s;
* the key ``a`` only acknowledges (and says so when nothing waits);
* a long press (``SIGUSR2``, or the key ``R``) is a factory reset: bonds and routine
  erased, every BLE central disconnected.

Both are also methods, for tests and scripts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from .band import Band

if TYPE_CHECKING:  # bumble loads only when the band has BLE
    from .ble import BlePeripheral

logger = logging.getLogger(__name__)

PRESS_KEY = "p"
ACK_KEY = "a"
LONG_PRESS_KEY = "R"


def console_in_foreground() -> bool:
    """Whether stdin is a terminal whose foreground is this process (keys may be read)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty() and os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


class BandButton:
    """The button of ``band`` as the simulator's signals and keys press it: acknowledge, pairing window, factory reset."""

    def __init__(self, band: Band, ble: BlePeripheral | None = None, *, say: Callable[[str], None] | None = None) -> None:
        self.band = band
        self.ble = ble
        self.say = say or (lambda text: print(text, flush=True))
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def press(self, seconds: float | None = None) -> None:
        """Acknowledge the cue the band repeats, if it waits for one; otherwise open the pairing window (``seconds``: its length, 60 s by default)."""
        self.band.process()  # a wait whose cap is due now has ended: the press opens the pairing window instead
        if self.band.ack_pending:
            self.acknowledge()
            return
        if self.ble is None:
            self.say("button: no BLE, nothing to pair")
            return
        self.ble.open_pairing_window(seconds)
        self.say(f"pairing window open for {self.ble.security.window.remaining:.0f} s")

    def acknowledge(self) -> None:
        """The wearer acknowledges the repeated cue (a short press while the band waits for one)."""
        if self.band.acknowledge():
            self.say("acknowledged")
        else:
            self.say("button: nothing waits for an acknowledgement")

    async def long_press(self) -> None:
        """Factory reset: bonds and routine erased."""
        if self.ble is not None:
            await self.ble.factory_reset()
        else:
            if self.band.interpreter is not None:
                self.band.stop()
            self.band.storage.erase()
            self.band.reload()
            self.band.announce_state()
        self.say("factory reset: bonds and routine erased")

    def _spawn_long_press(self) -> None:
        task = asyncio.get_running_loop().create_task(self.long_press())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGUSR1 presses, SIGUSR2 long-presses; keys too when stdin is a terminal."""
        loop.add_signal_handler(signal.SIGUSR1, self.press)
        loop.add_signal_handler(signal.SIGUSR2, self._spawn_long_press)
        if console_in_foreground():
            signal.signal(signal.SIGTTIN, signal.SIG_IGN)  # if sent to the background later: EIO, not a stop
            self._loop = loop
            loop.add_reader(sys.stdin.fileno(), self._on_key)

    def _on_key(self) -> None:
        try:
            line = sys.stdin.readline().strip()
        except OSError:  # in the background now, or the terminal went away: no more keys
            if self._loop is not None:
                self._loop.remove_reader(sys.stdin.fileno())
            return
        if line == PRESS_KEY:
            self.press()
        elif line == ACK_KEY:
            self.acknowledge()
        elif line == LONG_PRESS_KEY:
            self._spawn_long_press()
        elif line:
            self.say(f"keys: {PRESS_KEY}+Enter = button press (acknowledge a repeated cue, else pairing window), "
                     f"{ACK_KEY}+Enter = acknowledge, {LONG_PRESS_KEY}+Enter = long press (factory reset)")
