"""Long, coverage-guided fuzzing of the band's parsers with atheris (libFuzzer for Python).

    pip install atheris
    python -m tests.fuzz_atheris table    -atheris_runs=200000
    python -m tests.fuzz_atheris mount    -max_total_time=600
    python -m tests.fuzz_atheris frames   -max_total_time=600
    python -m tests.fuzz_atheris handler  -max_total_time=600
    python -m tests.fuzz_atheris noise    -max_total_time=600

Each target feeds libFuzzer's bytes to the same ``check_*`` function the
hypothesis tests in :mod:`tests.band.test_fuzz_band` use, so the invariants are one
definition: no uncaught exception, a named error for every rejection.  Any
arguments after the target go to libFuzzer (``-timeout=1`` bounds the time per
input, ``-rss_limit_mb=512`` the memory).  Without atheris, run the hypothesis
tests long instead: ``python -m pytest tests/band/test_fuzz_band.py --hypothesis-profile=long``.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = ("table", "mount", "frames", "handler", "noise")


def _targets(atheris: Any) -> dict[str, Callable[[bytes], None]]:
    with atheris.instrument_imports(include=["protocol", "firmware_sim"]):
        from firmware_sim.storage import FLASH_SIZE
        from protocol import framing, table  # noqa: F401  (imported here to be instrumented for coverage)

        from .band.test_fuzz_band import STATES, check_frames, check_handler, check_mount, check_noise, check_table, flash_image

    def mount(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        sectors: tuple[list[Any], list[Any]] = ([], [])
        for sector in sectors:
            for _ in range(fdp.ConsumeIntInRange(0, 12)):
                sector.append((
                    fdp.PickValueInList(["valid", "valid", "torn", "garbage"]), fdp.ConsumeIntInRange(0, 255), fdp.ConsumeIntInRange(0, 255),
                    fdp.ConsumeIntInRange(0, 0xFFFF), fdp.ConsumeIntInRange(0, 64), fdp.ConsumeIntInRange(0, 0xFFFFFFFF),
                    fdp.ConsumeIntInRange(0, 15), fdp.ConsumeBytes(16).ljust(16, b"\0"),
                ))
        slots = (fdp.ConsumeIntInRange(0, 3), fdp.ConsumeIntInRange(0, 3))
        flips = [(fdp.ConsumeIntInRange(0, FLASH_SIZE - 1), fdp.ConsumeIntInRange(0, 7)) for _ in range(fdp.ConsumeIntInRange(0, 4))]
        check_mount(flash_image(sectors, slots, flips))

    def frames(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        sizes = [fdp.ConsumeIntInRange(1, 64) for _ in range(fdp.ConsumeIntInRange(1, 8))]
        items = []
        while fdp.remaining_bytes():
            kind = "frame" if fdp.ConsumeBool() else "garbage"
            payload = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1 if kind == "frame" else 0, 300))
            if kind == "frame" and not payload:
                break
            items.append((kind, payload))
        check_frames(items, sizes)

    def handler(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        state = fdp.PickValueInList(STATES)
        batch = [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 270)) for _ in range(fdp.ConsumeIntInRange(1, 8))]
        check_handler(state, batch)

    def noise(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        state = fdp.PickValueInList(STATES)
        sizes = [fdp.ConsumeIntInRange(1, 80) for _ in range(fdp.ConsumeIntInRange(1, 8))]
        check_noise(state, fdp.ConsumeBytes(600), sizes)

    return {"table": check_table, "mount": mount, "frames": frames, "handler": handler, "noise": noise}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(f"usage: python -m tests.fuzz_atheris {{{','.join(TARGETS)}}} [libFuzzer options]", file=sys.stderr)
        return 2
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        print("atheris is not installed (pip install atheris); run the hypothesis tests with --hypothesis-profile=long instead", file=sys.stderr)
        return 1
    target = _targets(atheris)[argv[1]]
    options = argv[2:]
    if argv[1] == "table" and not any(not option.startswith("-") for option in options):
        # Seed the corpus with the shipped tables, so mutations start deep inside the format.
        from .band.test_fuzz_band import TABLES

        corpus = tempfile.mkdtemp(prefix="handcue-fuzz-tables-")
        for index, data in enumerate(TABLES):
            Path(corpus, f"shipped-{index}").write_bytes(data)
        options.append(corpus)
    atheris.Setup([argv[0], *options], target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
