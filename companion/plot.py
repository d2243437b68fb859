"""A routine's step table drawn as a timeline (``handcue plot``).

The picture is computed from the table bytes alone, like ``handcue inspect``:
what the band will play, not what the routine file says.  From top to
bottom it shows

* the hand (and repeat round) being treated,
* one coloured band per step (one colour per technique), labelled with the
  technique and its length,
* the iterations of each step (finger, hand or repeat number),
* one row per cue kind with a mark at every cue the band fires (merged as a
  band merges coincident cues), coloured by cue pattern,

and legends of the techniques and of the cue patterns (name and on/off ms).
matplotlib is an optional dependency (``pip install "handcue[plot]"``); it is
imported only when a plot is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.constants import FINGERS, CueKind, Iterate, TechniqueCode
from protocol.errors import HandCueError
from protocol.table import LoopRecord, Node, StepRecord, StepTable, build_tree, decode_table
from protocol.timeline import Cue, bind, table_cues

from .render import HANDS_TEXT
from .routine import format_ms

IMAGE_SUFFIXES = (".png", ".svg")
MATPLOTLIB_MISSING = 'plotting needs matplotlib: pip install "handcue[plot]"'

# Set3: twelve pastel colours, one per technique code, readable under black text.
TECHNIQUE_COLOURS = (
    "#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462",
    "#b3de69", "#fccde5", "#d9d9d9", "#bc80bd", "#ccebc5", "#ffed6f",
)
# Strong colours for cue patterns (Dark2 + a few of tab10), cycled past ten.
PATTERN_COLOURS = (
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
    "#a6761d", "#1f77b4", "#d62728", "#17becf",
)
HAND_COLOURS = {"left": "#dbe9f6", "right": "#fbe3cf", None: "#eeeeee"}
KIND_STYLE = {
    CueKind.TICK: ("|", "tick"),
    CueKind.WARN: ("v", "warning"),
    CueKind.START: (">", "step start"),
    CueKind.NEXT: ("o", "next finger / repeat"),
    CueKind.ROUND: ("s", "next round"),
    CueKind.SWITCH: ("D", "switch hands"),
    CueKind.DONE: ("*", "done"),
}
FINGER_SHORT = {finger: finger[0].upper() for finger in FINGERS}

# Layout, in inches (the y axis is scaled so one data unit is one inch).
FIG_WIDTH = 14.0
LEFT_MARGIN = 1.55
RIGHT_MARGIN = 0.35
TITLE_SPACE = 0.65
XAXIS_SPACE = 0.6
CONTEXT_ROW = 0.34
STEP_ROW = 0.78
ITERATION_ROW = 0.34
CUE_ROW = 0.3
ROW_GAP = 0.06
LEGEND_LINE = 0.24
LABEL_PAD_PX = 4


@dataclass(frozen=True)
class Iteration:
    """One iteration of a step record, at its place in the expanded routine."""

    t_ms: int
    duration_ms: int
    step: int
    record: StepRecord
    index: int
    hand: str | None
    finger: str | None
    rounds: tuple[int, ...]
    """1-based round numbers of the enclosing plain-repeat loops (count > 1)."""


def expand_steps(table: StepTable) -> list[Iteration]:
    """Every step iteration in play order, loops expanded, hands and fingers bound.

    Walks the record tree the way :func:`protocol.timeline.table_cues` does, so
    the spans line up with the cue times.
    """
    hands = table.hands.order
    default_hand = hands[0] if len(hands) == 1 else None
    result: list[Iteration] = []

    def play(nodes: list[Node], t: int, hand: str | None, finger: str | None, rounds: tuple[int, ...]) -> int:
        for node in nodes:
            record = node.record
            if isinstance(record, LoopRecord):
                for i in range(record.count):
                    h, f = bind(record.iterate, i, hands, hand, finger)
                    inner = rounds + (i + 1,) if record.iterate == Iterate.NONE and record.count > 1 else rounds
                    t = play(node.children, t, h, f, inner)
                continue
            assert isinstance(record, StepRecord)
            for i in range(record.count):
                h, f = bind(record.iterate, i, hands, hand, finger)
                result.append(Iteration(t, record.duration_ms, node.index, record, i, h, f, rounds))
                t += record.duration_ms
        return t

    play(build_tree(table.records), 0, default_hand, None, ())
    return result


@dataclass
class Band:
    """A labelled span of one row."""

    start_ms: int
    end_ms: int
    labels: tuple[str, ...]
    """Candidate labels, most informative first; the first that fits is drawn."""
    colour: str


def _merge(bands: list[Band]) -> list[Band]:
    merged: list[Band] = []
    for band in bands:
        last = merged[-1] if merged else None
        if last and last.labels == band.labels and last.colour == band.colour and last.end_ms == band.start_ms:
            last.end_ms = band.end_ms
        else:
            merged.append(Band(band.start_ms, band.end_ms, band.labels, band.colour))
    return merged


def _context_label(hand: str | None, rounds: tuple[int, ...]) -> str:
    parts = [f"{hand} hand"] if hand else []
    parts += [f"round {r}" for r in rounds]
    return " · ".join(parts)


def context_bands(iterations: list[Iteration]) -> list[Band]:
    """Which hand (and repeat round) is treated when; empty when nothing is bound."""
    if all(it.hand is None and not it.rounds for it in iterations):
        return []
    bands = []
    for it in iterations:
        label = _context_label(it.hand, it.rounds)
        bands.append(Band(it.t_ms, it.t_ms + it.duration_ms, (label,) if label else (), HAND_COLOURS.get(it.hand, HAND_COLOURS[None])))
    return _merge(bands)


def technique_colour(code: TechniqueCode) -> str:
    return TECHNIQUE_COLOURS[(int(code) - 1) % len(TECHNIQUE_COLOURS)]


def _repetition(record: StepRecord) -> str:
    if record.count == 1:
        return format_ms(record.duration_ms)
    unit = {Iterate.FINGER: "fingers", Iterate.HAND: "hands"}.get(record.iterate, "times")
    return f"{format_ms(record.duration_ms)} × {record.count} {unit}"


def step_bands(iterations: list[Iteration]) -> list[Band]:
    """One band per played step (all iterations of a record in one loop pass)."""
    bands: list[Band] = []
    for it in iterations:
        if it.index:
            bands[-1].end_ms = it.t_ms + it.duration_ms
            continue
        technique = it.record.technique.text_id
        where = it.hand if it.record.iterate != Iterate.HAND else None
        if it.finger and it.record.iterate != Iterate.FINGER:
            where = f"{where} · {it.finger}" if where else it.finger
        detail = _repetition(it.record) + (f" · {where}" if where else "")
        labels = (f"{technique}\n{detail}", f"{technique}\n{_repetition(it.record)}", technique)
        bands.append(Band(it.t_ms, it.t_ms + it.duration_ms, labels, technique_colour(it.record.technique)))
    return bands


def iteration_bands(iterations: list[Iteration]) -> list[Band]:
    """The fingers, hands or repeat numbers of steps played more than once."""
    bands = []
    for it in iterations:
        record = it.record
        if record.iterate == Iterate.FINGER or (it.finger and record.count == 1):
            labels: tuple[str, ...] = (it.finger or "", FINGER_SHORT.get(it.finger or "", ""))
        elif record.iterate == Iterate.HAND:
            labels = (f"{it.hand} hand", it.hand or "", (it.hand or " ")[0].upper())
        elif record.count > 1:
            labels = (f"{it.index + 1} of {record.count}", str(it.index + 1))
        else:
            continue
        bands.append(Band(it.t_ms, it.t_ms + it.duration_ms, labels, technique_colour(record.technique)))
    return bands


def pattern_colour(index: int) -> str:
    return PATTERN_COLOURS[index % len(PATTERN_COLOURS)]


def pattern_legend_label(table: StepTable, index: int) -> str:
    pattern = table.patterns[index]
    amplitude = max(s.amplitude for s in pattern.segments)
    level = f" at {amplitude} %" if amplitude < 100 else ""
    return f"{table.pattern_label(index)}  {pattern.describe()} ms{level}"


def plot_routine(data: bytes, output: Path) -> None:
    """Draw the table ``data`` as a timeline into ``output`` (``.png`` or ``.svg``)."""
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise HandCueError(f"{output}: cannot tell the image type; name it .png or .svg")
    try:
        import matplotlib
    except ImportError as exc:
        raise HandCueError(MATPLOTLIB_MISSING) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    table = decode_table(data)
    iterations = expand_steps(table)
    cues = table_cues(table)
    with matplotlib.rc_context({"svg.fonttype": "none", "font.size": 9, "font.family": "DejaVu Sans"}):
        fig = _draw(plt, table, iterations, cues)
        try:
            metadata: dict[str, Any] = {"Date": None} if suffix == ".svg" else {}
            fig.savefig(output, format=suffix[1:], dpi=150, metadata=metadata)
        finally:
            plt.close(fig)


def _draw(plt: Any, table: StepTable, iterations: list[Iteration], cues: list[Cue]) -> Any:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    total_ms = table.total_ms
    rows: list[tuple[str, float, str]] = []  # (label, height, what) from top to bottom
    contexts = context_bands(iterations)
    if contexts:
        rows.append(("hand / round" if any(it.rounds for it in iterations) else "hand", CONTEXT_ROW, "context"))
    rows.append(("step", STEP_ROW, "steps"))
    iteration_spans = iteration_bands(iterations)
    if iteration_spans:
        rows.append(("finger / repeat", ITERATION_ROW, "iterations"))
    kinds = sorted({cue.kind for cue in cues}, reverse=True)
    rows += [(KIND_STYLE[kind][1], CUE_ROW, f"cue:{int(kind)}") for kind in kinds]

    plot_height = sum(height for _, height, _ in rows) + ROW_GAP * (len(rows) + 1)
    techniques = sorted({it.record.technique for it in iterations})
    used_patterns = sorted({cue.pattern for cue in cues})
    legend_cols = 2
    legend_lines = max(-(-len(techniques) // legend_cols), -(-len(used_patterns) // legend_cols))
    legend_height = 0.45 + LEGEND_LINE * legend_lines
    fig_height = TITLE_SPACE + plot_height + XAXIS_SPACE + legend_height
    fig = plt.figure(figsize=(FIG_WIDTH, fig_height))
    ax = fig.add_axes((
        LEFT_MARGIN / FIG_WIDTH,
        (XAXIS_SPACE + legend_height) / fig_height,
        (FIG_WIDTH - LEFT_MARGIN - RIGHT_MARGIN) / FIG_WIDTH,
        plot_height / fig_height,
    ))
    end_min = total_ms / 60_000
    ax.set_xlim(0, end_min if end_min > 0 else 1)
    ax.set_ylim(0, plot_height)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=16, steps=[1, 2, 2.5, 5, 10]))
    ax.set_xlabel("time (minutes)")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)

    renderer = fig.canvas.get_renderer()
    px_per_min = ax.transData.transform((1, 0))[0] - ax.transData.transform((0, 0))[0]
    px_per_inch = fig.dpi

    # faint guides at every step start
    for band in step_bands(iterations)[1:]:
        ax.axvline(band.start_ms / 60_000, color="#bbbbbb", linewidth=0.6, zorder=0)

    y_ticks, y_labels = [], []
    top = plot_height - ROW_GAP
    for label, height, what in rows:
        bottom = top - height
        y_ticks.append(bottom + height / 2)
        y_labels.append(label)
        if what == "context":
            _draw_bands(ax, renderer, contexts, bottom, height, px_per_min, px_per_inch, fontsize=8.5, bold=False)
        elif what == "steps":
            _draw_bands(ax, renderer, step_bands(iterations), bottom, height, px_per_min, px_per_inch, fontsize=8.5, bold=True)
        elif what == "iterations":
            _draw_bands(ax, renderer, iteration_spans, bottom, height, px_per_min, px_per_inch, fontsize=7.5, bold=False)
        else:
            kind = CueKind(int(what.split(":")[1]))
            marker = KIND_STYLE[kind][0]
            picked = [cue for cue in cues if cue.kind == kind]
            ax.scatter(
                [cue.t_ms / 60_000 for cue in picked],
                [bottom + height / 2] * len(picked),
                c=[pattern_colour(cue.pattern) for cue in picked],
                marker=marker,
                s=60 if kind == CueKind.DONE else 26,
                linewidths=1.4 if marker == "|" else 0.4,
                edgecolors=None if marker == "|" else "white",
                zorder=3,
                clip_on=False,
            )
            ax.axhline(bottom + height / 2, color="#e6e6e6", linewidth=0.6, zorder=1)
        top = bottom - ROW_GAP
    ax.set_yticks(y_ticks, y_labels)

    name = table.name or "(names stripped)"
    fig.text(
        LEFT_MARGIN / FIG_WIDTH, 1 - 0.28 / fig_height,
        f"{name}  —  {format_ms(total_ms)}, hands: {HANDS_TEXT[table.hands.name]}",
        fontsize=12, fontweight="bold", va="center",
    )
    fig.text(
        LEFT_MARGIN / FIG_WIDTH, 1 - 0.52 / fig_height,
        "marks: cues the band fires (shape = why, colour = pattern); coinciding cues are merged as on the band",
        fontsize=8, color="#555555", va="center",
    )

    legend_ax = fig.add_axes((LEFT_MARGIN / FIG_WIDTH, 0.02 / fig_height, (FIG_WIDTH - LEFT_MARGIN - RIGHT_MARGIN) / FIG_WIDTH, (legend_height - 0.05) / fig_height))
    legend_ax.axis("off")
    technique_handles = [Patch(facecolor=technique_colour(code), edgecolor="#666666", label=_technique_legend(code)) for code in techniques]
    pattern_handles = [
        Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor=pattern_colour(index), markeredgecolor="white",
               label=pattern_legend_label(table, index))
        for index in used_patterns
    ]
    first = legend_ax.legend(handles=technique_handles, title="techniques", loc="upper left", ncol=legend_cols, fontsize=8,
                             title_fontsize=8.5, frameon=False, alignment="left")
    legend_ax.add_artist(first)
    if pattern_handles:
        legend_ax.legend(handles=pattern_handles, title="cue patterns (on/off ms)", loc="upper left", bbox_to_anchor=(0.55, 1),
                         ncol=legend_cols, fontsize=8, title_fontsize=8.5, frameon=False, alignment="left")
    return fig


def _technique_legend(code: TechniqueCode) -> str:
    from .techniques import TECHNIQUES

    return f"{code.text_id} — {TECHNIQUES[code.text_id].name}"


def _draw_bands(ax: Any, renderer: Any, bands: list[Band], bottom: float, height: float,
                px_per_min: float, px_per_inch: float, *, fontsize: float, bold: bool) -> None:
    """Bars for ``bands`` with the first label that fits inside each (else none)."""
    for band in bands:
        x0, x1 = band.start_ms / 60_000, band.end_ms / 60_000
        ax.broken_barh([(x0, x1 - x0)], (bottom, height), facecolors=band.colour, edgecolors="white", linewidth=0.8, zorder=2)
        width_px = (x1 - x0) * px_per_min - 2 * LABEL_PAD_PX
        height_px = height * px_per_inch - 2 * LABEL_PAD_PX
        for label in band.labels:
            if not label:
                continue
            placed = _fit_label(ax, renderer, label, (x0 + x1) / 2, bottom + height / 2, width_px, height_px, fontsize, bold)
            if placed:
                break


def _fit_label(ax: Any, renderer: Any, label: str, x: float, y: float, width_px: float, height_px: float, fontsize: float, bold: bool) -> bool:
    for rotation in (0, 90):
        text = ax.text(x, y, label, ha="center", va="center", rotation=rotation, fontsize=fontsize,
                       fontweight="bold" if bold else "normal", linespacing=1.15, zorder=4, clip_on=True)
        extent = text.get_window_extent(renderer)
        if extent.width <= width_px and extent.height <= height_px:
            return True
        text.remove()
    return False
