"""Routine files: TOML in, a checked :class:`Routine` model out.

The format is documented in ``docs/routines.md``.  Every problem is reported
with the file, the step path (``steps[0].steps[3] (key_grip)``) and the field,
and says what is allowed; unknown keys are errors so typos never pass.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from protocol.constants import TABLE_MAGIC, TIME_UNIT_MS, Hands, Iterate, Limits
from protocol.iterations import iterations
from protocol.table import CuePattern, pattern_problem

from .durations import format_ms
from .errors import RoutineError
from .techniques import CUE_VOCABULARY, FULL, TECHNIQUES, parse_on_off

ACUPRESSURE_MAX_MS = 15 * 60_000
ACUPRESSURE_MIN_MS = 5 * 60_000
ROUTINE_WARN_MS = 60 * 60_000
TOLD_APART_PATTERNS = 8
"""About how many cue patterns people tell apart on one actuator (by rhythm and length, not strength): the shipped vocabulary's size."""

HANDS_VALUES = {
    "left": Hands.LEFT,
    "right": Hands.RIGHT,
    "both": Hands.LEFT_THEN_RIGHT,
    "left-right": Hands.LEFT_THEN_RIGHT,
    "right-left": Hands.RIGHT_THEN_LEFT,
}
FOR_EACH_VALUES = {"finger": Iterate.FINGER, "hand": Iterate.HAND}
ROUTINE_KEYS = ("id", "name", "description", "hands", "finish", "finish_ack", "patterns", "steps")
STEP_KEYS = ("technique", "duration", "for_each", "repeat", "start", "next", "tick", "tick_every", "halfway", "warn", "warn_before", "ack", "note")
BLOCK_KEYS = ("steps", "for_each", "repeat", "next", "note")
PATTERN_KEYS = ("on_off", "amplitude", "meaning")
WRONG_ACK = {
    ROUTINE_KEYS: "not a routine key; the finish waits for an acknowledgement with finish_ack = true, a step with ack = true",
    BLOCK_KEYS: "a block does not wait for an acknowledgement; put ack = true on its first step",
    PATTERN_KEYS: "a cue pattern does not wait for an acknowledgement; put ack = true on the step that plays it",
}
"""Why ``ack`` is refused where it is not a key, by the keys allowed there."""
STDIN = "-"
"""The reference that means standard input."""
MAX_INPUT_BYTES = 1024 * 1024
"""Routine files over this size are refused before parsing."""
MAX_DURATION_S = 10**7
"""Any duration above this (about 16 weeks) is refused as out of range before any arithmetic."""


# --------------------------------------------------------------------------
# Model


@dataclass
class StepCues:
    """Pattern names (None = silent) and timings of a step's cues."""

    start: str | None
    next: str | None
    tick: str | None
    tick_every_ms: int
    warn: str | None
    warn_before_ms: int


@dataclass
class Step:
    """One technique for ``duration_ms``, repeated ``count`` times."""

    path: str
    technique: str
    duration_ms: int
    iterate: Iterate
    count: int
    cues: StepCues
    note: str = ""
    number: int = 0
    """1-based, in file order: the number the card, ``inspect``, the live line and the checker show."""
    ack: bool = False
    """The band repeats the start cue until the wearer presses its button, before the step's time runs."""

    @property
    def total_ms(self) -> int:
        return self.duration_ms * self.count

    @property
    def label(self) -> str:
        return f"{self.path} (step {self.number}, {self.technique})"

    @property
    def body(self) -> None:
        """A step has no body (see :mod:`protocol.iterations`)."""
        return None


@dataclass
class Block:
    """Steps played ``count`` times, for each hand, finger or round."""

    path: str
    steps: list[Step | Block]
    iterate: Iterate
    count: int
    next: str | None
    note: str = ""

    @property
    def total_ms(self) -> int:
        return self.count * sum(item.total_ms for item in self.steps)

    @property
    def duration_ms(self) -> int:
        """One round of the block."""
        return sum(item.total_ms for item in self.steps)

    @property
    def body(self) -> list[Step | Block]:
        return self.steps


@dataclass
class Diagnostic:
    """One finding of the checker."""

    severity: str  # "error" or "warning"
    source: str
    where: str
    message: str

    def __str__(self) -> str:
        parts = [self.source]
        if self.severity == "warning":
            parts.append("warning")
        if self.where:
            parts.append(self.where)
        parts.append(self.message)
        return ": ".join(parts)


@dataclass
class Routine:
    """A checked routine, ready to compile."""

    id: str
    name: str
    description: str
    hands: Hands
    finish: str | None
    patterns: dict[str, CuePattern]
    meanings: dict[str, str]
    """Pattern name -> what the vibration tells the person (custom ones: the file's ``meaning``)."""
    steps: list[Step | Block]
    source: str
    warnings: list[Diagnostic] = field(default_factory=list)
    finish_ack: bool = False
    """The band repeats the finish cue until the wearer presses its button."""

    @property
    def uses_ack(self) -> bool:
        """Whether the routine asks for any acknowledgement (its table is then format 2)."""
        return self.finish_ack or any(it.item.ack for it in iterations(self.steps, self.hands) if isinstance(it.item, Step))

    @property
    def total_ms(self) -> int:
        return sum(item.total_ms for item in self.steps)


# --------------------------------------------------------------------------
# Shipped routines


SHIPPED_PACKAGE = "companion.routines"


def shipped_routines() -> dict[str, Path]:
    """Shipped routine id -> path of its TOML file inside the package."""
    folder = resources.files(SHIPPED_PACKAGE)
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".toml")}


def resolve_routine(reference: str | Path) -> Path:
    """A routine file path, or the path of the shipped routine with that id."""
    path = Path(reference)
    if path.exists():
        return path
    shipped = shipped_routines()
    if str(reference) in shipped:
        return shipped[str(reference)]
    hint = _did_you_mean(str(reference), shipped)
    raise RoutineError(f"{reference}: no such file or shipped routine (shipped: {', '.join(sorted(shipped))}){hint}")


# --------------------------------------------------------------------------
# Loading


def load_routine(reference: str | Path) -> Routine:
    """Read, parse and check a routine file or shipped routine id.

    Raises :class:`RoutineError` listing every error; warnings are kept in
    :attr:`Routine.warnings`.
    """
    return checked(*check_routine(reference))


def checked(routine: Routine | None, diagnostics: list[Diagnostic]) -> Routine:
    """``routine``, or :class:`RoutineError` listing every error of ``diagnostics``."""
    errors = [d for d in diagnostics if d.severity == "error"]
    if errors or routine is None:
        raise RoutineError("\n".join(str(d) for d in errors))
    return routine


def check_routine(reference: str | Path) -> tuple[Routine | None, list[Diagnostic]]:
    """Like :func:`load_routine` but returns every diagnostic instead of raising.

    ``reference`` is a file, a shipped routine id or ``-`` (standard input).
    """
    source, data = read_source(reference)
    return parse_routine(routine_text(data, source), source)


def read_source(reference: str | Path) -> tuple[str, bytes]:
    """The name to report and the bytes of a file, shipped routine id or ``-`` (standard input).

    Refuses input over :data:`MAX_INPUT_BYTES` before reading it all.
    """
    if str(reference) == STDIN:
        import sys

        data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        source = "<stdin>"
    else:
        path = resolve_routine(reference)
        source = str(reference) if not Path(reference).exists() else str(path)
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
        except OSError as exc:
            raise RoutineError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_INPUT_BYTES:
        raise RoutineError(f"{source}: over {MAX_INPUT_BYTES // 1024 // 1024} MiB; a routine is a few KiB of TOML and a table at most 32 KiB")
    return source, data


def routine_text(data: bytes, source: str) -> str:
    """The TOML text of routine bytes (a UTF-8 byte-order mark is dropped); a clear error for anything else."""
    if data.startswith(TABLE_MAGIC):
        raise RoutineError(f"{source} is a compiled table; use inspect or upload (check, compile and card read routines)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RoutineError(f"{source} is neither a routine (UTF-8 TOML) nor a table (byte {exc.start} is not UTF-8)") from exc
    return text.removeprefix("\ufeff")


def parse_routine(text: str, source: str = "<routine>") -> tuple[Routine | None, list[Diagnostic]]:
    """Parse and check routine TOML ``text``; ``source`` names it in messages."""
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        document = tomllib.loads(text)
    except RecursionError:
        return None, [Diagnostic("error", source, "", "TOML nested too deeply (arrays or tables inside each other); a routine nests a few levels")]
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        if match:
            message = message[: match.start()].strip()
            where = f"{source}:{match.group(1)}:{match.group(2)}"
        else:
            where = source
        return None, [Diagnostic("error", where, "", f"TOML syntax error: {message}")]
    return _Checker(source).routine(document)


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source
        self.diagnostics: list[Diagnostic] = []
        self.step_number = 0
        """Steps are numbered 1, 2, ... in file order, as the card, ``inspect`` and the live line number them."""
        self.patterns: dict[str, CuePattern] = {}
        self.meanings: dict[str, str] = {name: cue.meaning for name, cue in CUE_VOCABULARY.items()}

    # reporting

    def error(self, where: str, message: str) -> None:
        self.diagnostics.append(Diagnostic("error", self.source, where, message))

    def warning(self, where: str, message: str) -> None:
        self.diagnostics.append(Diagnostic("warning", self.source, where, message))

    def unknown_keys(self, where: str, table: dict[str, Any], allowed: tuple[str, ...]) -> None:
        for key in table:
            if key == "ack" and key not in allowed:
                self.error(_join(where, key), WRONG_ACK.get(allowed, "not allowed here; a step (ack = true) or the finish (finish_ack = true) waits for one"))
                continue
            if key not in allowed:
                hint = _did_you_mean(key, allowed)
                self.error(where, f"unknown key '{key}'{hint}; allowed: {', '.join(allowed)}")

    # routine level

    def routine(self, doc: dict[str, Any]) -> tuple[Routine | None, list[Diagnostic]]:
        self.unknown_keys("", doc, ROUTINE_KEYS)
        name = self.text(doc, "", "name", required=True)
        routine_id = self.text(doc, "", "id") or _slug(name or Path(self.source).stem)
        description = self.text(doc, "", "description")
        hands_text = doc.get("hands", "both")
        hands = HANDS_VALUES.get(hands_text) if isinstance(hands_text, str) else None
        if hands is None:
            self.error("hands", f"{toml_text(hands_text)} is not a hand order; allowed: {', '.join(HANDS_VALUES)}")
            hands = Hands.LEFT_THEN_RIGHT
        self.patterns = {name: cue.pattern for name, cue in CUE_VOCABULARY.items()}
        self.custom_patterns(doc.get("patterns", {}))
        finish = self.cue_ref(doc, "", "finish", "done")
        finish_ack = self.flag(doc, "", "finish_ack")
        if finish_ack and finish is None and "finish" in doc and doc["finish"] is False:
            self.error("finish_ack", "needs a finish cue to repeat, but finish = false")
        if name and len(name.encode()) > Limits.MAX_NAME_BYTES:
            self.error("name", f"{len(name.encode())} bytes; at most {Limits.MAX_NAME_BYTES} (UTF-8)")
        steps_value = doc.get("steps")
        if not isinstance(steps_value, list) or not steps_value:
            self.error("steps", "a routine needs at least one [[steps]] table")
            steps: list[Step | Block] = []
        else:
            steps = self.items(steps_value, "steps", hands, frozenset(), 0)
        used = {name for name in self._used_patterns(steps, finish)}
        routine = Routine(
            id=routine_id or "",
            name=name or "",
            description=description or "",
            hands=hands,
            finish=finish,
            patterns={key: value for key, value in self.patterns.items() if key in used},
            meanings={key: self.meanings.get(key, "") for key in self.patterns if key in used},
            steps=steps,
            source=self.source,
            finish_ack=finish_ack,
        )
        if not any(d.severity == "error" for d in self.diagnostics):
            self.safety(routine)
            self.told_apart(routine)
        routine.warnings = [d for d in self.diagnostics if d.severity == "warning"]
        has_errors = any(d.severity == "error" for d in self.diagnostics)
        return (None if has_errors else routine), self.diagnostics

    def custom_patterns(self, value: Any) -> None:
        if not isinstance(value, dict):
            self.error("patterns", 'must be a table of name = "on/off ms" entries')
            return
        for name, spec in value.items():
            where = f"patterns.{name}"
            amplitude = FULL
            if isinstance(spec, dict):
                self.unknown_keys(where, spec, PATTERN_KEYS)
                meaning = spec.get("meaning", "")
                bad = False
                if not isinstance(meaning, str):
                    self.error(f"{where}.meaning", f"{toml_text(meaning)} must be a string")
                    bad = True
                else:
                    self.meanings[name] = meaning
                amplitude = spec.get("amplitude", FULL)
                if not isinstance(amplitude, int) or isinstance(amplitude, bool) or not 1 <= amplitude <= Limits.MAX_AMPLITUDE:
                    self.error(f"{where}.amplitude", f"{toml_text(amplitude)}; allowed 1 to {Limits.MAX_AMPLITUDE} (percent)")
                    bad = True
                if "on_off" not in spec:
                    self.error(f"{where}.on_off", 'missing; a pattern table needs on_off = "80/120/80" (ms, starting with the motor on)')
                    continue
                spec = spec["on_off"]
                where = f"{where}.on_off"
                if bad:
                    continue
            if not isinstance(spec, str):
                self.error(where, f'{toml_text(spec)} is not an on/off string such as "80/120/80" (ms, starting with the motor on)')
                continue
            try:
                pattern = parse_on_off(spec, amplitude, name)
            except ValueError:
                self.error(where, f"{toml_text(spec)} is not on/off milliseconds separated by '/' (e.g. \"80/120/80\")")
                continue
            problem = pattern_problem(pattern)
            if problem:
                self.error(where, problem)
                continue
            self.patterns[name] = pattern

    # steps

    def items(self, values: list[Any], path: str, hands: Hands, bound: frozenset[Iterate], depth: int) -> list[Step | Block]:
        result: list[Step | Block] = []
        for index, value in enumerate(values):
            where = f"{path}[{index}]"
            if not isinstance(value, dict):
                self.error(where, "must be a table ([[steps]])")
                continue
            if "steps" in value:
                block = self.block(value, where, hands, bound, depth)
                if block:
                    result.append(block)
            else:
                step = self.step(value, where, hands, bound)
                if step:
                    result.append(step)
        return result

    def repetition(self, value: dict[str, Any], where: str, hands: Hands, bound: frozenset[Iterate], default_each: str | None) -> tuple[Iterate, int] | None:
        if "for_each" not in value and default_each == "hand" and (Iterate.HAND in bound or len(hands.order) == 1):
            default_each = None  # a per-hand technique inside a hand block, or in a one-hand routine
        if "for_each" not in value and default_each == "finger" and Iterate.FINGER in bound:
            default_each = None  # a per-finger technique inside a finger block: once per round, on the block's finger
        for_each = value.get("for_each", default_each)
        if for_each in (None, "none", False) or ("repeat" in value and "for_each" not in value):
            iterate = Iterate.NONE
        elif isinstance(for_each, str) and for_each in FOR_EACH_VALUES:
            iterate = FOR_EACH_VALUES[for_each]
        else:
            self.error(_join(where, "for_each"), f"{toml_text(for_each)}; allowed: \"finger\", \"hand\" or \"none\"")
            return None
        if iterate != Iterate.NONE and iterate in bound:
            self.error(_join(where, "for_each"), f"already inside a block that goes {for_each} by {for_each}")
            return None
        if iterate == Iterate.HAND and len(hands.order) == 1:
            self.error(_join(where, "for_each"), f'"hand", but the routine treats only the {hands.order[0]} hand (set hands = "both")')
            return None
        if "repeat" in value:
            if iterate != Iterate.NONE:
                self.error(_join(where, "repeat"), "cannot be combined with for_each; nest a block instead")
                return None
            count = value["repeat"]
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= Limits.MAX_COUNT:
                self.error(_join(where, "repeat"), f"{toml_text(count)}; allowed a whole number from 1 to {Limits.MAX_COUNT}")
                return None
            return iterate, count
        counts = {Iterate.NONE: 1, Iterate.FINGER: 5, Iterate.HAND: len(hands.order)}
        return iterate, counts[iterate]

    def flag(self, table: dict[str, Any], where: str, key: str) -> bool:
        value = table.get(key, False)
        if not isinstance(value, bool):
            self.error(_join(where, key), f"{toml_text(value)}; allowed: true or false")
            return False
        return value

    def block(self, value: dict[str, Any], where: str, hands: Hands, bound: frozenset[Iterate], depth: int) -> Block | None:
        self.unknown_keys(where, value, BLOCK_KEYS)
        if depth + 1 > Limits.MAX_LOOP_NESTING:
            self.error(where, f"blocks nest deeper than {Limits.MAX_LOOP_NESTING} levels")
            return None
        repetition = self.repetition(value, where, hands, bound, None)
        steps_value = value["steps"]
        if not isinstance(steps_value, list) or not steps_value:
            self.error(_join(where, "steps"), "a block needs at least one step")
            return None
        iterate, count = repetition or (Iterate.NONE, 1)  # a bad repetition is reported; its steps are still checked
        default_next = {Iterate.HAND: "switch", Iterate.FINGER: "next", Iterate.NONE: "round"}[iterate]
        next_cue = self.cue_ref(value, where, "next", default_next) if count > 1 else None
        note = self.text(value, where, "note") or ""
        inner = self.items(steps_value, f"{where}.steps", hands, bound | {iterate}, depth + 1)
        if repetition is None:
            return None
        return Block(where, inner, iterate, count, next_cue, note)

    def step(self, value: dict[str, Any], where: str, hands: Hands, bound: frozenset[Iterate]) -> Step | None:
        self.step_number += 1
        number = self.step_number
        technique_id = value.get("technique")
        known = isinstance(technique_id, str) and technique_id in TECHNIQUES
        label = f"{where} (step {number}, {technique_id})" if known else f"{where} (step {number})"
        self.unknown_keys(label, value, STEP_KEYS)  # first: a misspelt "technique" is named before it is missed
        if not known:
            if technique_id is None:
                self.error(_join(label, "technique"), "missing; every step names a technique (or holds steps = [...] as a block)")
            else:
                hint = _did_you_mean(str(technique_id), TECHNIQUES)
                self.error(_join(label, "technique"), f"{toml_text(technique_id)} is not in the library{hint}; see `handcue techniques`")
            return None
        assert isinstance(technique_id, str)
        defaults = TECHNIQUES[technique_id].defaults
        repetition = self.repetition(value, label, hands, bound, defaults.for_each if "repeat" not in value else None)
        duration = self.duration(value, label, "duration", defaults.duration_s)
        iterate, count = repetition or (Iterate.NONE, 1)  # reported; the other keys are still checked
        if duration is not None and (duration < Limits.MIN_STEP_MS or duration > Limits.MAX_STEP_UNITS * TIME_UNIT_MS):
            self.error(_join(label, "duration"), f"{_fmt(duration)}; a step lasts {_fmt(Limits.MIN_STEP_MS)} to {_fmt(Limits.MAX_STEP_UNITS * TIME_UNIT_MS)}")
            duration = None
        start = self.cue_ref(value, label, "start", defaults.start)
        next_cue = self.cue_ref(value, label, "next", "switch" if iterate == Iterate.HAND and defaults.next == "next" else defaults.next)
        # tick_every alone on a technique whose periodic cue is at half time: that cue, every tick_every
        tick = self.cue_ref(value, label, "tick", defaults.tick or (defaults.halfway if "tick_every" in value else None))
        tick_every = self.duration(value, label, "tick_every", defaults.tick_every_s)
        halfway = self.cue_ref(value, label, "halfway", defaults.halfway)
        warn = self.cue_ref(value, label, "warn", defaults.warn)
        warn_before = self.duration(value, label, "warn_before", defaults.warn_before_s)
        note = self.text(value, label, "note") or ""
        ack = self.flag(value, label, "ack")
        if ack and start is None:
            self.error(_join(label, "ack"), "needs a start cue to repeat, but start = false")
            return None
        if repetition is None or duration is None or tick_every is None or warn_before is None:
            return None
        if halfway:
            if "tick_every" in value or "tick" in value:
                if "halfway" in value:
                    self.error(_join(label, "halfway"), "cannot be combined with tick/tick_every: both use the periodic cue")
                    return None
            else:
                tick, tick_every = halfway, _round_unit(duration / 2)
        if not tick:
            tick_every = 0
        elif not tick_every:
            tick = None
        elif tick_every < Limits.MIN_STEP_MS:
            self.error(_join(label, "tick_every"), f"{_fmt(tick_every)}; at least {_fmt(Limits.MIN_STEP_MS)} between ticks")
            return None
        elif tick_every >= duration:
            self.warning(_join(label, "tick_every"), f"{_fmt(tick_every)} is not shorter than the step ({_fmt(duration)}): no tick is felt")
            tick, tick_every = None, 0
        if not warn:
            warn_before = 0
        elif not warn_before:
            warn = None
        elif warn_before >= duration:
            self.error(_join(label, "warn_before"), f"{_fmt(warn_before)} is not shorter than the step ({_fmt(duration)})")
            return None
        if tick and warn and (duration - warn_before) % tick_every == 0:
            self.warning(
                _join(label, "warn_before"),
                f"the {'halfway' if halfway and tick == halfway else 'tick'} cue at {_fmt(duration - warn_before)} coincides with "
                "the warning, and the warning wins: that cue is never felt",
            )
        cues = StepCues(start, next_cue if count > 1 else None, tick, tick_every, warn, warn_before)
        return Step(where, technique_id, duration, iterate, count, cues, note, number, ack)

    # fields

    def text(self, table: dict[str, Any], where: str, key: str, required: bool = False) -> str | None:
        if key not in table:
            if required:
                self.error(_join(where, key), "missing")
            return None
        value = table[key]
        if not isinstance(value, str) or (required and not value.strip()):
            self.error(_join(where, key), f"{toml_text(value)} must be a non-empty string")
            return None
        return value

    def duration(self, table: dict[str, Any], where: str, key: str, default_s: float) -> int | None:
        value = table.get(key, default_s)
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.error(_join(where, key), str(exc))
            return None

    def cue_ref(self, table: dict[str, Any], where: str, key: str, default: str | None) -> str | None:
        value = table.get(key, default)
        if value is False or value is None:
            return None
        if not isinstance(value, str) or value not in self.patterns:
            hint = _did_you_mean(str(value), self.patterns)
            self.error(_join(where, key), f"{toml_text(value)} is not a cue pattern{hint}; allowed: {', '.join(self.patterns)} or false")
            return None
        return value

    # safety

    def safety(self, routine: Routine) -> None:
        """Acupressure time per point and overall length (shared/techniques.md)."""
        per_point: dict[tuple[str, str | None], int] = {}
        first_step: dict[tuple[str, str | None], Step] = {}

        for it in iterations(routine.steps, routine.hands):  # in play order: a limit is reported where it is crossed
            item = it.item
            if isinstance(item, Block) or not TECHNIQUES[item.technique].acupressure:
                continue
            key = (item.technique, it.hand)
            per_point[key] = per_point.get(key, 0) + item.duration_ms
            first_step.setdefault(key, item)
            if per_point[key] > ACUPRESSURE_MAX_MS:
                on = f" on the {it.hand} side" if it.hand else ""
                self.error(
                    _join(item.label, "duration"),
                    f"{_fmt(per_point[key])} of acupressure{on} exceeds the {_fmt(ACUPRESSURE_MAX_MS)} limit per point",
                )
                per_point[key] = -10**12  # report a point once

        for key, total in per_point.items():
            if 0 <= total < ACUPRESSURE_MIN_MS:
                on = f" on the {key[1]} side" if key[1] else ""
                self.warning(
                    _join(first_step[key].label, "duration"),
                    f"{_fmt(total)} of acupressure{on} is under the {_fmt(ACUPRESSURE_MIN_MS)} the article recommends",
                )
        if routine.total_ms > ROUTINE_WARN_MS:
            self.warning("", f"routine lasts {_fmt(routine.total_ms)}; over {_fmt(ROUTINE_WARN_MS)}, the article warns against overdoing it")

    def told_apart(self, routine: Routine) -> None:
        """Cues the wearer may not tell apart: too many patterns, or patterns with the same rhythm (differing in strength at most)."""
        used = sorted(routine.patterns, key=list(self.patterns).index)  # vocabulary order, then the file's
        distinct = len({routine.patterns[name].segments for name in used})  # identical ones compile to one cue
        if distinct > TOLD_APART_PATTERNS:
            self.warning("patterns", f"the routine uses {distinct} different cue patterns ({', '.join(used)}); people tell about 6 to "
                                     f"{TOLD_APART_PATTERNS} apart on one band: let cues of the same meaning share a pattern")
        by_rhythm: dict[str, list[str]] = {}
        for name in used:
            by_rhythm.setdefault(routine.patterns[name].describe(), []).append(name)
        for rhythm, names in by_rhythm.items():
            if len(names) < 2:
                continue
            strengths = [f"{name} at {_amplitudes(routine.patterns[name])} %" for name in names]
            custom = [name for name in names if name not in CUE_VOCABULARY]
            where = f"patterns.{custom[-1]}" if custom else "patterns"
            if len({routine.patterns[n].segments for n in names}) == 1:
                self.warning(where, f"{', '.join(names)} are the same vibration ({rhythm} ms at {_amplitudes(routine.patterns[names[0]])} %): "
                                    "the wearer feels one cue; give each meaning its own rhythm, or use one name")
                continue
            self.warning(where, f"{', '.join(strengths)} share the rhythm {rhythm} ms and differ only in strength: on one band "
                                "people tell cues apart by rhythm and length, not strength; give each its own rhythm")

    def _used_patterns(self, items: list[Step | Block], finish: str | None) -> list[str]:
        used = [finish] if finish else []
        for item in items:
            if isinstance(item, Block):
                used += [item.next] if item.next else []
                used += self._used_patterns(item.steps, None)
            else:
                used += [n for n in (item.cues.start, item.cues.next, item.cues.tick, item.cues.warn) if n]
        return used


# --------------------------------------------------------------------------
# Helpers

_DURATION_PART = re.compile(
    r"(\d+(?:\.\d+)?)\s*(hours?|hrs?|h|milliseconds?|msecs?|ms|minutes?|mins?|m|seconds?|secs?|s)", re.IGNORECASE)
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_DURATION_HINT = 'write seconds (90) or text ("90 s", "5 min", "1 min 30 s", "250 ms", "1:30", "1:02:30")'


def _amplitudes(pattern: CuePattern) -> str:
    """A pattern's pulse amplitudes: ``100``, or ``100/40`` when its pulses differ."""
    pulses = [str(s.amplitude) for s in pattern.segments if s.is_on]
    return pulses[0] if len(set(pulses)) == 1 else "/".join(pulses)


def _unit_key(unit: str) -> str:
    unit = unit.lower()
    if unit.startswith("mil") or unit.startswith("ms"):
        return "ms"
    return unit[0]


def parse_duration(value: Any) -> int:
    """Seconds (number) or text such as ``"90 s"``, ``"5 min"``, ``"1 min 30 s"``, ``"1:30"``, ``"1:02:30"`` -> ms.

    Times are rounded to the table's 100 ms unit.
    """
    if isinstance(value, bool):
        raise ValueError(f"{toml_text(value)} is not a duration; {_DURATION_HINT}")
    if isinstance(value, int) and abs(value) > MAX_DURATION_S:
        raise ValueError(f"{toml_text(value)} is out of range; a step lasts at most {_fmt(Limits.MAX_STEP_UNITS * TIME_UNIT_MS)}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{toml_text(value)} is not a duration (a finite, non-negative number of seconds)")
        return _checked_ms(value * 1000, value)
    if not isinstance(value, str):
        raise ValueError(f"{toml_text(value)} is not a duration; {_DURATION_HINT}")
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return _checked_ms(float(text) * 1000, value)
    clock = re.fullmatch(r"(?:(\d+):([0-5]\d)|(\d+):([0-5]\d):([0-5]\d))", text)
    if clock:
        if clock.group(1) is not None:
            seconds = int(clock.group(1)) * 60 + int(clock.group(2))
        else:
            seconds = (int(clock.group(3)) * 60 + int(clock.group(4))) * 60 + int(clock.group(5))
        return _checked_ms(seconds * 1000, value)
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(text):
        if text[position : match.start()].strip():
            break
        total += float(match.group(1)) * _UNIT_MS[_unit_key(match.group(2))]
        position = match.end()
    if position == 0 or text[position:].strip():
        raise ValueError(f"{toml_text(value)} is not a duration; {_DURATION_HINT}")
    return _checked_ms(total, value)


def _checked_ms(ms: float, written: Any) -> int:
    """``ms`` rounded to the table unit, or a clear error when it is beyond any duration a routine can hold."""
    if not math.isfinite(ms) or ms > MAX_DURATION_S * 1000:
        raise ValueError(f"{toml_text(written)} is out of range; a step lasts at most {_fmt(Limits.MAX_STEP_UNITS * TIME_UNIT_MS)}")
    return _round_unit(ms)


def toml_text(value: Any, limit: int = 60) -> str:
    """``value`` as it is written in TOML (``true``, ``["left", "right"]``, ``"five min"``), shortened past ``limit``."""

    def render(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return json.dumps(value, ensure_ascii=False)
        if isinstance(value, int):
            digits = str(value)
            return digits if len(digits) <= 20 else f"{digits[:6]}... ({len(digits.lstrip('-'))} digits)"
        if isinstance(value, float):
            return "inf" if value == math.inf else "-inf" if value == -math.inf else "nan" if value != value else repr(value)
        if isinstance(value, list):
            return "[" + ", ".join(render(item) for item in value) + "]"
        if isinstance(value, dict):
            return "{ " + ", ".join(f"{key} = {render(item)}" for key, item in value.items()) + " }" if value else "{}"
        if hasattr(value, "isoformat"):
            return str(value.isoformat())
        return str(value)

    text = render(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _round_unit(ms: float) -> int:
    return int(ms / TIME_UNIT_MS + 0.5) * TIME_UNIT_MS


_fmt = format_ms


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""

