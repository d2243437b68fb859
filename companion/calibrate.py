"""Calibration: find the weakest cue strength at which the wearer feels every cue and tells them apart.

The band plays each cue of the shipped vocabulary (:data:`~companion.techniques.CUE_VOCABULARY`)
with PREVIEW (SPEC §17.12) at a few strengths, weakest first, and the wearer
answers two questions per strength: felt them all?  told them apart?  The first
strength with two yeses is proposed and, once confirmed, stored on the band
(SET_SETTINGS).  PREVIEW never touches the band's routine, so a calibration
cut short leaves the band as it was.

The flow talks to people only through :class:`Prompts`, so tests answer it
(:class:`ScriptedPrompts`) and ``handcue calibrate`` hands it click's prompts.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from protocol.constants import BandState, CueKind
from protocol.errors import HandCueError
from protocol.strength import check_strength
from protocol.table import CuePattern

from .techniques import CUE_VOCABULARY

if TYPE_CHECKING:
    from .client import BandClient
    from .routine import Routine

DEFAULT_STRENGTHS = (40, 70, 100)
"""Strengths tried unless ``--strengths`` says otherwise: a soft, a middle and the full setting."""
GAP_MS = 700
"""Silence after each cue, so that two cues are felt as two (and the wearer hears its name first)."""


@dataclass(frozen=True)
class CalibrationCue:
    """One cue the band plays: its vocabulary name, what it means, its pattern and (if it has one) its cue kind."""

    name: str
    meaning: str
    pattern: CuePattern
    kind: CueKind | None


def vocabulary_cues() -> list[CalibrationCue]:
    """Every cue of the shipped vocabulary, in its order; the ones the band fires by kind carry that kind."""
    return [CalibrationCue(name, cue.meaning, cue.pattern, _KINDS.get(name)) for name, cue in CUE_VOCABULARY.items()]


def routine_cues(routine: Routine) -> list[CalibrationCue]:
    """The cue patterns ``routine`` plays (its custom ones included), with what each means: what its wearer must tell apart."""
    return [CalibrationCue(name, routine.meanings.get(name, ""), pattern, _KINDS.get(name) if name in CUE_VOCABULARY else None)
            for name, pattern in routine.patterns.items()]


_KINDS = {kind.text_id: kind for kind in CueKind}


def parse_strengths(text: str) -> tuple[int, ...]:
    """``"40,70,100"`` -> (40, 70, 100), sorted and without repeats; ValueError naming what is wrong."""
    values: set[int] = set()
    for part in text.split(","):
        try:
            values.add(check_strength(int(part.strip())))
        except ValueError as exc:
            detail = str(exc) if part.strip().lstrip("-").isdigit() else f"{part.strip()!r} is not a whole number of percent"
            raise ValueError(f"--strengths {text}: {detail}") from None
    return tuple(sorted(values))


class Prompts(Protocol):
    """How the flow talks to the wearer."""

    def show(self, text: str) -> None:
        """Tell the wearer something (one line)."""
        ...

    def confirm(self, question: str, default: bool) -> bool:
        """A yes/no question."""
        ...


@dataclass
class ScriptedPrompts:
    """Prompts answered from a list (tests, scripts): each question takes the next answer; what was said is kept."""

    answers: list[bool]
    said: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def show(self, text: str) -> None:
        self.said.append(text)

    def confirm(self, question: str, default: bool) -> bool:
        self.asked.append(question)
        if not self.answers:
            raise AssertionError(f"no scripted answer left for {question!r}")
        return self.answers.pop(0)


@dataclass(frozen=True)
class Trial:
    """What the wearer answered at one strength (the last time it was played, after any replays)."""

    strength: int
    felt: bool
    told_apart: bool
    plays: int


@dataclass
class Calibration:
    """The outcome: every strength tried, the one proposed, and whether it was stored."""

    before: int
    """The band's stored strength when calibration began."""
    trials: list[Trial] = field(default_factory=list)
    chosen: int | None = None
    """The weakest strength felt and told apart (None: none was)."""
    stored: bool = False

    @property
    def strength(self) -> int:
        """The strength the band holds now."""
        return self.chosen if self.stored and self.chosen is not None else self.before

    def to_json(self) -> dict[str, Any]:
        return {"before": self.before, "chosen": self.chosen, "stored": self.stored, "strength": self.strength,
                "trials": [{"strength": t.strength, "felt": t.felt, "told_apart": t.told_apart, "plays": t.plays} for t in self.trials]}


Sleep = Callable[[float], Awaitable[None]]


async def ask(prompts: Prompts, question: str, default: bool) -> bool:
    """``prompts.confirm`` on a daemon thread: the event loop keeps serving the link (a BLE connection
    stays alive) while the wearer thinks, and an interrupted calibration does not wait for an answer."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def settle(value: bool | None, error: BaseException | None) -> None:
        if answer.done():
            return
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(bool(value))

    def wait_for_answer() -> None:
        try:
            value, error = prompts.confirm(question, default), None
        except BaseException as exc:  # click.Abort on end of input: handed to the flow
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=wait_for_answer, name="calibrate-prompt", daemon=True).start()
    return await answer


async def play_cues(client: BandClient, cues: Sequence[CalibrationCue], strength: int, prompts: Prompts, sleep: Sleep = asyncio.sleep) -> None:
    """Play ``cues`` in turn at ``strength`` %, each named just before it plays and followed by a gap."""
    for cue in cues:
        prompts.show(f"  {cue.name:<7} {cue.meaning or cue.pattern.describe()}")
        await client.preview(cue.pattern, strength, cue.kind)
        await sleep((cue.pattern.duration_ms + GAP_MS) / 1000)


async def calibrate(client: BandClient, prompts: Prompts, strengths: Sequence[int] = DEFAULT_STRENGTHS,
                    cues: Sequence[CalibrationCue] | None = None, sleep: Sleep = asyncio.sleep) -> Calibration:
    """Play the cues at each of ``strengths`` (weakest first) until the wearer feels and tells them all apart;
    propose that strength and store it once confirmed.  Nothing is stored without a yes."""
    cues = list(cues) if cues is not None else vocabulary_cues()
    order = sorted({check_strength(s) for s in strengths})
    status = await client.status()
    if status.state in (BandState.RUNNING, BandState.WAITING):  # the band would refuse the first preview anyway: say so before the first question
        raise HandCueError("the band is playing a routine; pause or stop it (handcue pause, handcue stop) before calibrating")
    result = Calibration(before=(await client.settings()).strength)
    prompts.show(f"The band plays {len(cues)} cues at {', '.join(f'{s} %' for s in order)}, weakest first "
                 f"(it is set to {result.before} % now). Say what you felt.")
    for strength in order:
        plays = 0
        while True:
            prompts.show(f"At {strength} %:")
            await play_cues(client, cues, strength, prompts, sleep)
            plays += 1
            felt = await ask(prompts, f"Felt all {len(cues)}?", True)
            told = felt and await ask(prompts, "Could tell them apart?", True)
            if (felt and told) or not await ask(prompts, f"Play them again at {strength} %?", False):
                break
        result.trials.append(Trial(strength, felt, told, plays))
        if felt and told:
            result.chosen = strength
            break
    if result.chosen is None:
        prompts.show(f"No strength tried was felt and told apart; the band stays at {result.before} %. "
                     "Try it snugger on the wrist, or on bare skin.")
        return result
    if result.chosen == result.before:
        prompts.show(f"{result.chosen} % is felt and told apart: the band is already set to it.")
        return result
    if await ask(prompts, f"Store {result.chosen} % as this band's cue strength (now {result.before} %)?", True):
        await client.set_strength(result.chosen)
        result.stored = True
        prompts.show(f"cue strength: {result.chosen} % (stored)")
    else:
        later = f"handcue settings --to {client.transport.address} --strength {result.chosen}"
        prompts.show(f"Nothing stored; the band stays at {result.before} % ({later} stores it later).")
    return result
