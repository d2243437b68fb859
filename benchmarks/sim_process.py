"""A `handcue-sim` subprocess for the benchmarks: started, its first line read with a timeout, stopped on exit."""

from __future__ import annotations

import select
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Self

SIM_START_TIMEOUT = 30.0


def sim_command() -> list[str]:
    """The `handcue-sim` console script of this interpreter (not a shell shim), else the module."""
    script = Path(sys.executable).with_name("handcue-sim")
    if script.exists():
        return [str(script)]
    found = shutil.which("handcue-sim")
    return [found] if found else [sys.executable, "-m", "firmware_sim"]


class SimProcess:
    """``handcue-sim ARGS`` whose first line starts with ``prefix`` (``serial: ``, ``ble: ``); use as a with block."""

    def __init__(self, args: list[str], prefix: str, timeout: float = SIM_START_TIMEOUT) -> None:
        self.process = subprocess.Popen([*sim_command(), *args], stdout=subprocess.PIPE, text=True)
        try:
            self.first_line = self._readline(timeout)
            if not self.first_line.startswith(prefix):
                raise RuntimeError(f"handcue-sim printed {self.first_line!r}, expected {prefix!r}")
        except BaseException:
            self.stop()
            raise

    def _readline(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"handcue-sim printed nothing within {timeout:g} s")
        return self.process.stdout.readline()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
