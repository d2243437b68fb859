"""A printable routine card (``handcue card``): HTML or Markdown.

The card tells the person giving the massage what to do and what each
vibration means: title, total duration and hands; the cues the routine uses
(rhythm and meaning); then every step in order with its start time(s),
duration, repetition, how to do it and which cues fire when.  It is built
from the checked :class:`~companion.routine.Routine`, so it speaks in the
routine's own cue names; the HTML is one self-contained, print-friendly file.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from protocol.constants import TIME_UNIT_MS, Ack, CueKind, Iterate
from protocol.cues import CUES, STEP_CUE_SLOTS, CueFacts, Fires
from protocol.iterations import iterations
from protocol.table import CuePattern

from .render import HANDS_TEXT
from .routine import Block, Routine, Step, format_ms
from .techniques import TECHNIQUES

CARD_FORMATS = ("html", "md")
NOT_MEDICAL_ADVICE = (
    "Not medical advice. The techniques come from a hand-massage article and do not replace care: "
    "anyone with a condition should ask a clinician."
)
PRIORITY_NOTE = (
    "When two cues fall on the same moment the band plays only the more important one: "
    + " > ".join(CUES[kind].wording for kind in sorted(CueKind, reverse=True)) + "."
)
RHYTHM_UNIT_MS = 50
ON, OFF = "▮", "▯"
MAX_LISTED_STARTS = 5


# --------------------------------------------------------------------------
# What the card says, independent of the output format


@dataclass
class CueRow:
    name: str
    rhythm: str
    on_off: str
    strength: int
    meaning: str


@dataclass
class CueUse:
    """One cue of a step or block: which pattern, and when it fires."""

    name: str
    when: str


@dataclass
class CardStep:
    number: int
    technique_id: str
    technique_name: str
    how: str
    starts: str
    duration: str
    repetition: str
    cues: list[CueUse]
    note: str
    ack: str = ""
    """What the wearer does when the step waits for an acknowledgement (empty: it does not)."""


@dataclass
class CardBlock:
    title: str
    starts: str
    round_length: str
    cues: list[CueUse]
    note: str
    items: list[CardStep | CardBlock] = field(default_factory=list)


@dataclass
class Card:
    title: str
    description: str
    total: str
    hands: str
    step_count: int
    counts: str
    """``9 steps (50 plays), 119 cues``, as ``inspect`` and the demo summary say it."""
    vibrations: list[CueRow]
    items: list[CardStep | CardBlock]
    finish: CueUse | None
    strength: int | None = None
    """The cue strength (%) of the band of the wearer the card is printed for, if given."""
    finish_ack: str = ""
    """What the wearer does when the finish waits for an acknowledgement (empty: it does not)."""
    ack_note: str = ""
    """How acknowledgements change the times shown (empty without any)."""


@dataclass(frozen=True)
class _Start:
    t_ms: int
    hand: str | None
    finger: str | None
    rounds: tuple[int, ...]


def clock(ms: int) -> str:
    """``555000`` -> ``9:15``; tenths only when needed (``22500`` -> ``0:22.5``)."""
    minutes, rest = divmod(ms, 60_000)
    seconds = rest / 1000
    return f"{minutes}:{seconds:04.1f}" if rest % 1000 else f"{minutes}:{int(seconds):02d}"


def rhythm(pattern: CuePattern) -> str:
    """On/off drawn in 50 ms cells: ``80/120/80`` -> ``▮▮▯▯▮▮``."""
    cells = []
    for segment in pattern.segments:
        count = max(1, int(segment.duration_ms / RHYTHM_UNIT_MS + 0.5))
        cells.append((ON if segment.is_on else OFF) * count)
    return "".join(cells)




ACK_MARK = "⏺"
"""Marks every point where the wearer presses the band's button."""


def ack_text(cue: str, then: str) -> str:
    """What the wearer does at an acknowledgement point whose cue is ``cue``."""
    return (f"{ACK_MARK} press the band's button when you feel {cue}: it repeats every {format_ms(Ack.REPEAT_MS)} until you do "
            f"(for at most {format_ms(Ack.GIVE_UP_MS)}); {then}")


def _ack_cues(step: Step) -> str:
    """The cue a step's acknowledgement point repeats: its start cue, and on later plays the cue that begins each."""
    if step.count > 1 or step.iterate != Iterate.NONE:
        unit = {Iterate.FINGER: "finger", Iterate.HAND: "hand"}.get(step.iterate, "repeat")
        return f"“{step.cues.start}” (at each later {unit}, the cue that begins it)"
    return f"“{step.cues.start}”"


def _each(iterate: Iterate, count: int) -> str:
    return {Iterate.FINGER: "each finger", Iterate.HAND: "each hand"}.get(iterate, "each repeat" if count > 1 else "the step")


def _next(iterate: Iterate) -> str:
    return {Iterate.FINGER: "each next finger", Iterate.HAND: "the next hand"}.get(iterate, "each repeat")


def build_card(routine: Routine) -> Card:
    """The content of ``routine``'s card."""
    hands = routine.hands.order
    hands_text = HANDS_TEXT[routine.hands.name]
    starts: dict[int, list[_Start]] = {}
    used: list[str] = []

    def use(name: str | None) -> None:
        if name and name not in used:
            used.append(name)

    for it in iterations(routine.steps, routine.hands):
        item = it.item
        if isinstance(item, Block) or item.iterate == Iterate.HAND:  # every round of a block; a per-hand step when each hand begins
            starts.setdefault(id(item), []).append(_Start(it.t_ms, it.hand, it.finger, it.rounds))
        elif it.index == 0:  # other steps: once, where they begin (a per-finger step names no finger)
            finger = None if item.iterate == Iterate.FINGER else it.finger
            starts.setdefault(id(item), []).append(_Start(it.t_ms, it.hand, finger, it.rounds))
    number = 0

    def starts_text(item: Step | Block) -> str:
        found = starts[id(item)]
        if len(found) == 1:
            return clock(found[0].t_ms)
        shown = [_start_label(start, len(hands) > 1) for start in found[:MAX_LISTED_STARTS]]
        more = f", … ({len(found)} times in all)" if len(found) > MAX_LISTED_STARTS else ""
        return ", ".join(shown) + more

    def convert(items: list[Step | Block]) -> list[CardStep | CardBlock]:
        nonlocal number
        result: list[CardStep | CardBlock] = []
        for item in items:
            if isinstance(item, Block):
                cues = []
                if item.next and item.count > 1:
                    use(item.next)
                    cues.append(CueUse(item.next, {Iterate.HAND: "before the next hand", Iterate.FINGER: "before each next finger"}
                                       .get(item.iterate, "before each next round")))
                if item.iterate == Iterate.HAND:
                    title = f"For each hand ({hands_text})"
                elif item.iterate == Iterate.FINGER:
                    title = "For each finger (thumb to little finger)"
                else:
                    title = f"Repeat {item.count} times" if item.count > 1 else "Once"
                per = {Iterate.HAND: "per hand", Iterate.FINGER: "per finger"}.get(item.iterate, "per round")
                block = CardBlock(title, starts_text(item), f"{format_ms(item.total_ms // item.count)} {per}", cues, _one_line(item.note))
                block.items = convert(item.steps)
                result.append(block)
                continue
            number = item.number or number + 1  # the checker's numbering (file order), shared by inspect and the live line
            technique = TECHNIQUES[item.technique]
            result.append(CardStep(
                number=number,
                technique_id=item.technique,
                technique_name=technique.name,
                how=technique.how,
                starts=starts_text(item),
                duration=_duration_text(item),
                repetition=_repetition_text(item, hands_text),
                cues=_step_cues(item, use),
                note=_one_line(item.note),
                ack=ack_text(_ack_cues(item), "the step's time starts at the press") if item.ack else "",
            ))
        return result

    items = convert(routine.steps)
    use(routine.finish)
    finish = CueUse(routine.finish, f"when the routine is over ({clock(routine.total_ms)})") if routine.finish else None
    finish_ack = ack_text(f"“{routine.finish}”", "that confirms the routine was done") if routine.finish_ack else ""
    acks = sum(1 for it in iterations(routine.steps, routine.hands) if isinstance(it.item, Step) and it.item.ack and it.index == 0)
    acks += int(routine.finish_ack)
    ack_note = (f"Times assume each {ACK_MARK} press comes at the first cue; every wait for one adds up to {format_ms(Ack.GIVE_UP_MS)} "
                f"({acks} press{'es' if acks != 1 else ''} in all).") if acks else ""
    vibrations = []
    for name in used:
        pattern = routine.patterns[name]
        vibrations.append(CueRow(name, rhythm(pattern), pattern.describe(), max(s.amplitude for s in pattern.segments),
                                 routine.meanings.get(name) or "custom"))
    return Card(
        title=_one_line(routine.name),
        description=_one_line(routine.description),
        total=format_ms(routine.total_ms),
        hands=hands_text,
        step_count=number,
        counts=_counts(routine, number),
        vibrations=vibrations,
        items=items,
        finish=finish,
        finish_ack=finish_ack,
        ack_note=ack_note,
    )


def _counts(routine: Routine, steps: int) -> str:
    from protocol.timeline import table_cues

    from .compiler import build_table
    from .render import counts_text

    plays = sum(1 for it in iterations(routine.steps, routine.hands) if isinstance(it.item, Step))
    return counts_text(steps, plays, sum(1 for _ in table_cues(build_table(routine))))


def _start_label(start: _Start, two_hands: bool) -> str:
    parts = [start.hand] if start.hand and two_hands else []
    parts += [start.finger] if start.finger else []
    parts += [f"round {r}" for r in start.rounds]
    return f"{clock(start.t_ms)} ({', '.join(parts)})" if parts else clock(start.t_ms)


def _duration_text(step: Step) -> str:
    if step.count == 1:
        return format_ms(step.duration_ms)
    per = {Iterate.FINGER: "per finger", Iterate.HAND: "per hand"}.get(step.iterate, "each time")
    return f"{format_ms(step.duration_ms)} {per}, {format_ms(step.total_ms)} in all"


def _repetition_text(step: Step, hands_text: str) -> str:
    if step.iterate == Iterate.FINGER:
        return f"each finger, thumb to little finger ({step.count})" if step.count != 5 else "each finger, thumb to little finger"
    if step.iterate == Iterate.HAND:
        return f"each hand ({hands_text})"
    return f"{step.count} times" if step.count > 1 else "once"


def _step_cues(step: Step, use: Callable[[str | None], None]) -> list[CueUse]:
    each = _each(step.iterate, step.count)
    result = []
    for facts in STEP_CUE_SLOTS:
        name = getattr(step.cues, facts.slot or "")
        when = _cue_when(step, facts, each) if name else None
        if name and when:
            result.append(CueUse(name, when))
    for cue in result:
        use(cue.name)
    return result


def _cue_when(step: Step, facts: CueFacts, each: str) -> str | None:
    """When a step's cue in ``facts``' slot fires, in the card's words; None when it never fires."""
    timing = getattr(step.cues, facts.timing) if facts.timing else 0
    if (facts.timing and not timing) or (facts.fires == Fires.BETWEEN and step.count == 1):
        return None
    if facts.fires == Fires.EVERY:
        if timing >= step.duration_ms:
            return None
        if -(-step.duration_ms // timing) - 1 == 1:  # fires once
            halfway = " (halfway)" if 2 * timing - step.duration_ms <= TIME_UNIT_MS else ""
            return f"{format_ms(timing)} into {each}{halfway}"
    return facts.told.format(timing=format_ms(timing), each=each, next=_next(step.iterate))


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------
# Output formats


def routine_card(routine: Routine, fmt: str, strength: int | None = None) -> str:
    """The printable card of ``routine`` as ``"html"`` or ``"md"`` (Markdown) text; ``strength``: the wearer's cue strength (%)."""
    card = replace(build_card(routine), strength=strength)
    if fmt == "html":
        return _html(card)
    if fmt == "md":
        return _markdown(card)
    raise ValueError(f"card format {fmt!r}; choose one of {', '.join(CARD_FORMATS)}")


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|&~$])")


def md(text: str, *, line_start: bool = False) -> str:
    """``text`` as literal Markdown (CommonMark/GFM) on one line: characters that could format are escaped.

    ``line_start``: the text begins a line, where ``1.``, ``-``, ``+`` and ``=`` would start a block.
    """
    escaped = _MD_SPECIAL.sub(r"\\\1", _one_line(text))
    if line_start:
        escaped = re.sub(r"^(\d+)([.)])", r"\1\\\2", escaped)
        escaped = re.sub(r"^([-+=])", r"\\\1", escaped)
    return escaped


def _md_cues(cues: list[CueUse], rhythms: dict[str, str]) -> str:
    return "; ".join(f"**{md(cue.name)}** `{rhythms[cue.name]}` {md(cue.when)}" for cue in cues)


def _markdown(card: Card) -> str:
    rhythms = {row.name: row.rhythm for row in card.vibrations}
    lines = [f"# {md(card.title)}", ""]
    if card.description:
        lines += [md(card.description, line_start=True), ""]
    strength = f" · **Cue strength:** {card.strength} %" if card.strength is not None else ""
    lines += [f"**Total:** {card.total} · **Hands:** {card.hands} · **Steps:** {card.counts}{strength}", ""]
    lines += ["## What each vibration means", "", "| Cue | Rhythm | On/off (ms) | Meaning |", "|---|---|---|---|"]
    for row in card.vibrations:
        strength = f" at {row.strength} %" if row.strength < 100 else ""
        lines.append(f"| **{md(row.name)}** | `{row.rhythm}` | {row.on_off}{strength} | {md(row.meaning)} |")
    lines += ["", f"Each {ON} is {RHYTHM_UNIT_MS} ms of vibration, each {OFF} {RHYTHM_UNIT_MS} ms of pause. {md(PRIORITY_NOTE)}", ""]
    lines += ["## Steps", ""]

    def emit(items: list[CardStep | CardBlock], depth: int) -> None:
        prefix = "> " * depth
        for item in items:
            if isinstance(item, CardBlock):
                inner = "> " * (depth + 1)
                lines.append(f"{inner}**{md(item.title)}**, {item.round_length}; starts {md(item.starts)}".rstrip())
                if item.cues:
                    lines.append(inner.rstrip())
                    lines.append(f"{inner}Cues: {_md_cues(item.cues, rhythms)}")
                if item.note:
                    lines.extend([inner.rstrip(), f"{inner}*{md(item.note)}*"])
                lines.append(inner.rstrip())
                emit(item.items, depth + 1)
                lines.append(prefix.rstrip())
                continue
            lines.append(f"{prefix}### {item.number}. {md(item.technique_name)} · `{item.technique_id}`")
            lines.append(prefix.rstrip())
            lines.append(f"{prefix}- **Starts:** {md(item.starts)}")
            lines.append(f"{prefix}- **Duration:** {md(item.duration)}")
            lines.append(f"{prefix}- **Repeat:** {md(item.repetition)}")
            lines.append(f"{prefix}- **How:** {md(item.how)}")
            lines.append(f"{prefix}- **Cues:** {_md_cues(item.cues, rhythms) if item.cues else 'none'}")
            if item.ack:
                lines.append(f"{prefix}- **Press:** {md(item.ack)}")
            if item.note:
                lines.append(f"{prefix}- **Note:** {md(item.note)}")
            lines.append(prefix.rstrip())

    emit(card.items, 0)
    if card.finish:
        lines += [f"**Finish:** {_md_cues([card.finish], rhythms)}", ""]
    if card.finish_ack:
        lines += [f"**Press:** {md(card.finish_ack)}", ""]
    if card.ack_note:
        lines += [f"*{md(card.ack_note)}*", ""]
    lines += ["---", "", f"*{md(NOT_MEDICAL_ADVICE)}*", ""]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text)


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 11pt/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #111; background: #fff; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.7rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 1.6rem 0 .5rem; border-bottom: 2px solid #222; padding-bottom: .15rem; }
h3 { font-size: 1.05rem; margin: 0 0 .35rem; }
.description { margin: 0 0 .5rem; color: #333; }
.facts { margin: 0 0 1rem; padding: 0; list-style: none; display: flex; gap: 1.5rem; flex-wrap: wrap; }
.facts b { font-weight: 600; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .3rem .5rem; border-bottom: 1px solid #bbb; }
th { border-bottom: 2px solid #222; }
.rhythm { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; white-space: nowrap; letter-spacing: .02em; }
.small { font-size: .9em; color: #333; }
.block { border-left: 4px solid #888; padding: .1rem 0 .1rem .9rem; margin: .8rem 0; }
.block > .block-head { margin: .2rem 0 .5rem; }
.step { border: 1px solid #999; border-radius: 6px; padding: .55rem .8rem; margin: .6rem 0;
        break-inside: avoid; page-break-inside: avoid; }
.step dl { display: grid; grid-template-columns: 6.5rem 1fr; gap: .15rem .6rem; margin: 0; }
.step dt { font-weight: 600; }
.step dd { margin: 0; }
.cue-name { font-weight: 600; }
ul.cues { margin: 0; padding-left: 1.1rem; }
.block-head ul.cues { margin: .2rem 0 0; }
code { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .9em; }
.finish { margin: 1rem 0; }
.ack { font-weight: 600; }
.advice { margin-top: 1.5rem; border: 1px solid #222; padding: .6rem .8rem; font-size: .92em; }
@page { margin: 14mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 10pt; }
  h2 { break-after: avoid; page-break-after: avoid; }
  .block { border-left-color: #555; }
}
"""


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _html_cues(cues: list[CueUse], rhythms: dict[str, str]) -> str:
    if not cues:
        return "none"
    parts = [
        f'<li><span class="cue-name">{_h(cue.name)}</span> <span class="rhythm">{_h(rhythms[cue.name])}</span> {_h(cue.when)}</li>'
        for cue in cues
    ]
    return f'<ul class="cues">{"".join(parts)}</ul>'


def _html(card: Card) -> str:
    rhythms = {row.name: row.rhythm for row in card.vibrations}
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(card.title)} · HandCue routine card</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_h(card.title)}</h1>",
    ]
    if card.description:
        out.append(f'<p class="description">{_h(card.description)}</p>')
    out.append(
        f'<ul class="facts"><li><b>Total:</b> {_h(card.total)}</li><li><b>Hands:</b> {_h(card.hands)}</li>'
        f"<li><b>Steps:</b> {_h(card.counts)}</li>" + (f"<li><b>Cue strength:</b> {card.strength} %</li>" if card.strength is not None else "") + "</ul>"
    )
    out += [
        "<h2>What each vibration means</h2>",
        "<table>",
        "<thead><tr><th>Cue</th><th>Rhythm</th><th>On/off (ms)</th><th>Meaning</th></tr></thead>",
        "<tbody>",
    ]
    for row in card.vibrations:
        strength = f" at {row.strength} %" if row.strength < 100 else ""
        out.append(
            f'<tr><td class="cue-name">{_h(row.name)}</td><td class="rhythm">{_h(row.rhythm)}</td>'
            f"<td>{_h(row.on_off)}{strength}</td><td>{_h(row.meaning)}</td></tr>"
        )
    out += [
        "</tbody>",
        "</table>",
        f'<p class="small">Each {ON} is {RHYTHM_UNIT_MS} ms of vibration, each {OFF} {RHYTHM_UNIT_MS} ms of pause. {_h(PRIORITY_NOTE)}</p>',
        "<h2>Steps</h2>",
    ]

    def emit(items: list[CardStep | CardBlock]) -> None:
        for item in items:
            if isinstance(item, CardBlock):
                out.append('<section class="block">')
                head = f"<b>{_h(item.title)}</b>, {_h(item.round_length)}; starts {_h(item.starts)}"
                out.append(f'<div class="block-head">{head}')
                if item.cues:
                    out.append(_html_cues(item.cues, rhythms))
                if item.note:
                    out.append(f"<div><i>{_h(item.note)}</i></div>")
                out.append("</div>")
                emit(item.items)
                out.append("</section>")
                continue
            out.extend([
                '<section class="step">',
                f"<h3>{item.number}. {_h(item.technique_name)} <code>{_h(item.technique_id)}</code></h3>",
                "<dl>",
                f"<dt>Starts</dt><dd>{_h(item.starts)}</dd>",
                f"<dt>Duration</dt><dd>{_h(item.duration)}</dd>",
                f"<dt>Repeat</dt><dd>{_h(item.repetition)}</dd>",
                f"<dt>How</dt><dd>{_h(item.how)}</dd>",
                f"<dt>Cues</dt><dd>{_html_cues(item.cues, rhythms)}</dd>",
            ])
            if item.ack:
                out.append(f'<dt>Press</dt><dd class="ack">{_h(item.ack)}</dd>')
            if item.note:
                out.append(f"<dt>Note</dt><dd>{_h(item.note)}</dd>")
            out.extend(["</dl>", "</section>"])

    emit(card.items)
    if card.finish:
        out.append(f'<div class="finish"><b>Finish:</b> {_html_cues([card.finish], rhythms)}</div>')
    if card.finish_ack:
        out.append(f'<div class="finish ack"><b>Press:</b> {_h(card.finish_ack)}</div>')
    if card.ack_note:
        out.append(f'<p class="small">{_h(card.ack_note)}</p>')
    out += [f'<p class="advice"><b>Not medical advice.</b> {_h(NOT_MEDICAL_ADVICE.removeprefix("Not medical advice. "))}</p>', "</body>", "</html>", ""]
    return "\n".join(out)
