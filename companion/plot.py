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
* for a table that asks for acknowledgements, a row with a mark at each point
  where the band waits for the wearer's press (drawn as pressed at the first
  cue, as ``inspect`` assumes by default),

and legends of the techniques and of the cue patterns (name and on/off ms).
matplotlib is an optional dependency (``pip install "handcue[plot]"``); it is
imported only when a plot is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

from protocol.constants import FINGERS, CueKind, Iterate, TechniqueCode
from protocol.cues import CUES
from protocol.errors import HandCueError
from protocol.iterations import iterations as walk_iterations
from protocol.table import StepRecord, StepTable, build_tree, decode_table
from protocol.timeline import AckPoint, Cue, ack_points, table_cues

from .render import HANDS_TEXT
from .routine import format_ms

IMAGE_SUFFIXES = (".png", ".svg")
MATPLOTLIB_MISSING = 'plotting needs matplotlib: pip install -e ".[plot]" (in the HandCue folder, as the README says)'

# Set3: twelve pastel colours, one per technique code, readable under black text.
TECHNIQUE_COLOURS = (
    "#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462",
    "#b3de69", "#fccde5", "#d9d9d9", "#bc80bd", "#ccebc5", "#ffed6f",
)
# Strong colours for cue patterns: one fixed colour per built-in cue, then custom ones.
PATTERN_COLOURS = (
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f77b4",  # the built-in cues
    "#d62728", "#17becf", "#8c564b", "#bcbd22", "#9467bd", "#111111", "#7f7f7f", "#ff9896",  # custom cues
)
LOOP_FINGER_COLOUR = "#e4e0ee"
HAND_COLOURS = {"left": "#dbe9f6", "right": "#fbe3cf", None: "#eeeeee"}
FINGER_SHORT = {finger: finger[0].upper() for finger in FINGERS}

# Layout, in inches (the y axis is scaled so one data unit is one inch).
FIG_WIDTH = 14.0
LEFT_MARGIN = 1.55
RIGHT_MARGIN = 0.35
TITLE_SPACE = 0.65
XAXIS_SPACE = 0.6
CONTEXT_ROW = 0.34
STEP_ROW = 1.0
ITERATION_ROW = 0.34
CUE_ROW = 0.3
ROW_GAP = 0.06
LEGEND_LINE = 0.19
LABEL_PAD_PX = 4
ACK_ROW_LABEL = "press (ack)"
ACK_MARKER = "P"
ACK_COLOUR = "#111111"


ACK_MARKER_TEXT = "+ = the band waits for a button press, repeating the cue (times assume a press at the first cue)"


@dataclass(frozen=True)
class StepIteration:
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


def expand_steps(table: StepTable) -> list[StepIteration]:
    """Every step iteration in play order, loops expanded, hands and fingers bound.

    The walk of :func:`protocol.iterations.iterations`, as the timeline's, so
    the spans line up with the cue times.
    """
    return [
        StepIteration(it.t_ms, it.item.record.duration_ms, it.item.index, it.item.record, it.index, it.hand, it.finger, it.rounds)
        for it in walk_iterations(build_tree(table.records), table.hands)
        if isinstance(it.item.record, StepRecord)
    ]


@dataclass
class Band:
    """A labelled span of one row."""

    start_ms: int
    end_ms: int
    labels: tuple[str, ...]
    """Candidate labels, most informative first; the first that fits is drawn."""
    colour: str
    group: int = 0
    """Bands of one group (the iterations of one played step) use the same label level."""


def _merge(bands: list[Band]) -> list[Band]:
    merged: list[Band] = []
    for band in bands:
        last = merged[-1] if merged else None
        if last and (last.labels, last.colour, last.group, last.end_ms) == (band.labels, band.colour, band.group, band.start_ms):
            last.end_ms = band.end_ms
        else:
            merged.append(Band(band.start_ms, band.end_ms, band.labels, band.colour, band.group))
    return merged


def _context_label(hand: str | None, rounds: tuple[int, ...]) -> str:
    parts = [f"{hand} hand"] if hand else []
    parts += [f"round {r}" for r in rounds]
    return " · ".join(parts)


def context_bands(iterations: list[StepIteration]) -> list[Band]:
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


def step_bands(iterations: list[StepIteration]) -> list[Band]:
    """One band per played step (all iterations of a record in one loop pass).

    The hand is shown by the context row and the finger by the iteration row,
    so a step's own label is its technique and length.
    """
    bands: list[Band] = []
    for it in iterations:
        if it.index:
            bands[-1].end_ms = it.t_ms + it.duration_ms
            continue
        technique = it.record.technique.text_id
        detail = _repetition(it.record)
        wrapped = technique.replace("_", "_\n", 1).replace(":", ":\n", 1)
        labels = tuple(dict.fromkeys((f"{technique}\n{detail}", technique, wrapped)))
        bands.append(Band(it.t_ms, it.t_ms + it.duration_ms, labels, technique_colour(it.record.technique)))
    return bands


def iteration_bands(iterations: list[StepIteration]) -> list[Band]:
    """The finger, hand or repeat number of the step iterations that have one.

    A finger bound by an enclosing finger loop spans that loop's whole body
    (every step done on the thumb, then on the index finger, ...); otherwise
    each iteration of a step played more than once gets its own band.
    """
    bands: list[Band] = []
    group = 0
    in_loop_fingers = False
    for it in iterations:
        record = it.record
        if it.finger and record.iterate != Iterate.FINGER:
            if not in_loop_fingers:
                group += 1
                in_loop_fingers = True
            labels: tuple[str, ...] = (it.finger, FINGER_SHORT[it.finger])
            bands.append(Band(it.t_ms, it.t_ms + it.duration_ms, labels, LOOP_FINGER_COLOUR, group))
            continue
        in_loop_fingers = False
        group += it.index == 0
        if record.iterate == Iterate.FINGER and it.finger:
            labels = (it.finger, FINGER_SHORT[it.finger])
        elif record.iterate == Iterate.HAND and it.hand:
            labels = (f"{it.hand} hand", it.hand, it.hand[0].upper())
        elif record.count > 1:
            labels = (f"{it.index + 1} of {record.count}", str(it.index + 1))
        else:
            continue
        bands.append(Band(it.t_ms, it.t_ms + it.duration_ms, labels, technique_colour(record.technique), group))
    return _merge(bands)


def pattern_colour(table: StepTable, index: int) -> str:
    """A fixed colour per built-in cue name (the same in every plot), else one by index."""
    from .techniques import CUE_VOCABULARY

    names = list(CUE_VOCABULARY)
    name = table.patterns[index].name
    if name in CUE_VOCABULARY:
        return PATTERN_COLOURS[names.index(name) % len(PATTERN_COLOURS)]
    custom = PATTERN_COLOURS[len(names):] or PATTERN_COLOURS
    return custom[index % len(custom)]


def pattern_legend_label(table: StepTable, index: int) -> str:
    pattern = table.patterns[index]
    amplitude = max(s.amplitude for s in pattern.segments)
    level = f" at {amplitude} %" if amplitude < 100 else ""
    return f"{plain(table.pattern_label(index))}  {pattern.describe()} ms{level}"


def plain(text: str) -> str:
    """``text`` shown literally by matplotlib (a pair of ``$`` would start mathtext)."""
    return text.replace("$", r"\$")


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

    table = decode_table(data)
    iterations = expand_steps(table)
    cues = list(table_cues(table))
    points = list(ack_points(table))
    # An Agg canvas of our own: no pyplot, so the caller's backend and figures are left alone.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "handcue", "font.size": 9, "font.family": "DejaVu Sans", "figure.dpi": 100}):
        fig = _draw(table, iterations, cues, points)
        metadata: dict[str, Any] = {"Date": None} if suffix == ".svg" else {}
        fig.savefig(output, format=suffix[1:], dpi=150, metadata=metadata)


def _draw(table: StepTable, iterations: list[StepIteration], cues: list[Cue], points: list[AckPoint] | None = None) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
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
        rows.append(("iteration", ITERATION_ROW, "iterations"))
    kinds = sorted({cue.kind for cue in cues}, reverse=True)
    rows += [(CUES[kind].legend, CUE_ROW, f"cue:{int(kind)}") for kind in kinds]
    if points:
        rows.append((ACK_ROW_LABEL, CUE_ROW, "ack"))

    plot_height = sum(height for _, height, _ in rows) + ROW_GAP * (len(rows) + 1)
    techniques = sorted({it.record.technique for it in iterations})
    used_patterns = sorted({cue.pattern for cue in cues})
    legend_cols = 2
    legend_lines = max(-(-len(techniques) // legend_cols), -(-len(used_patterns) // legend_cols))
    legend_height = 0.45 + LEGEND_LINE * legend_lines
    fig_height = TITLE_SPACE + plot_height + XAXIS_SPACE + legend_height
    fig = Figure(figsize=(FIG_WIDTH, fig_height))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((
        LEFT_MARGIN / FIG_WIDTH,
        (XAXIS_SPACE + legend_height) / fig_height,
        (FIG_WIDTH - LEFT_MARGIN - RIGHT_MARGIN) / FIG_WIDTH,
        plot_height / fig_height,
    ))
    end_min = total_ms / 60_000
    margin = end_min * 0.006
    ax.set_xlim(-margin, end_min + margin)
    ax.set_ylim(0, plot_height)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=16, steps=[1, 2, 2.5, 5, 10]))
    ax.set_xlabel("time (minutes)")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)

    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # FigureCanvasAgg has it; the stubs type the base class
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
            _draw_bands(ax, renderer, contexts, bottom, height, px_per_min, px_per_inch, fontsize=8.5, rotate=False)
        elif what == "steps":
            _draw_bands(ax, renderer, step_bands(iterations), bottom, height, px_per_min, px_per_inch, fontsize=8.5)
        elif what == "iterations":
            _draw_bands(ax, renderer, iteration_spans, bottom, height, px_per_min, px_per_inch, fontsize=7, pad_px=0.5, rotate=False, uniform=True)
        elif what == "ack":
            assert points
            ax.scatter([point.t_ms / 60_000 for point in points], [bottom + height / 2] * len(points), c=ACK_COLOUR, marker=ACK_MARKER,
                       s=60, linewidths=0.4, edgecolors="white", zorder=3, clip_on=False)
            ax.axhline(bottom + height / 2, color="#e6e6e6", linewidth=0.6, zorder=1)
        else:
            kind = CueKind(int(what.split(":")[1]))
            marker = CUES[kind].marker
            picked = [cue for cue in cues if cue.kind == kind]
            ax.scatter(
                [cue.t_ms / 60_000 for cue in picked],
                [bottom + height / 2] * len(picked),
                c=[pattern_colour(table, cue.pattern) for cue in picked],
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

    name = plain(table.name) if table.name else "(names stripped)"
    fig.text(
        LEFT_MARGIN / FIG_WIDTH, 1 - 0.28 / fig_height,
        f"{name}  —  {format_ms(total_ms)}, hands: {HANDS_TEXT[table.hands.name]}",
        fontsize=12, fontweight="bold", va="center",
    )
    fig.text(
        LEFT_MARGIN / FIG_WIDTH, 1 - 0.52 / fig_height,
        "marks: cues the band fires (shape = why, colour = pattern); coinciding cues are merged as on the band"
        + (f"; {ACK_MARKER_TEXT}" if points else ""),
        fontsize=8, color="#555555", va="center",
    )

    legend_ax = fig.add_axes((LEFT_MARGIN / FIG_WIDTH, 0.02 / fig_height, (FIG_WIDTH - LEFT_MARGIN - RIGHT_MARGIN) / FIG_WIDTH, (legend_height - 0.05) / fig_height))
    legend_ax.axis("off")
    technique_handles = [Patch(facecolor=technique_colour(code), edgecolor="#666666", label=_technique_legend(code)) for code in techniques]
    pattern_handles = [
        Line2D([], [], linestyle="none", marker="o", markersize=7, markerfacecolor=pattern_colour(table, index), markeredgecolor="white",
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


def _draw_bands(ax: Any, renderer: Any, bands: list[Band], bottom: float, height: float, px_per_min: float, px_per_inch: float,
                *, fontsize: float, pad_px: float = LABEL_PAD_PX, rotate: bool = True, uniform: bool = False) -> None:
    """Bars for ``bands``, each with the first of its labels that fits inside it (else none).

    With ``uniform``, all bands of a group drop to the same label level, so
    the fingers of one step read "T I M R L" rather than a mix of names and letters.
    """
    y = bottom + height / 2
    height_px = height * px_per_inch - 2 * pad_px
    for band in bands:
        x0, x1 = band.start_ms / 60_000, band.end_ms / 60_000
        ax.broken_barh([(x0, x1 - x0)], (bottom, height), facecolors=band.colour, edgecolors="white", linewidth=0.8, zorder=2)
    groups = [list(members) for _, members in groupby(bands, key=lambda band: band.group)] if uniform else [[band] for band in bands]
    for members in groups:
        for level in range(max(len(band.labels) for band in members)):
            placements = []
            for band in members:
                label = band.labels[min(level, len(band.labels) - 1)]
                x = (band.start_ms + band.end_ms) / 2 / 60_000
                width_px = (band.end_ms - band.start_ms) / 60_000 * px_per_min - 2 * pad_px
                rotation = _fitting_rotation(ax, renderer, label, x, y, width_px, height_px, fontsize, rotate)
                placements.append((label, x, rotation))
            if all(rotation is not None for _, _, rotation in placements):
                for label, x, rotation in placements:
                    ax.text(x, y, label, ha="center", va="center", rotation=rotation, fontsize=fontsize, linespacing=1.15, zorder=4)
                break


def _fitting_rotation(ax: Any, renderer: Any, label: str, x: float, y: float, width_px: float, height_px: float,
                      fontsize: float, rotate: bool) -> int | None:
    """0 or 90 if ``label`` fits the box that way (horizontal preferred), else None."""
    for rotation in (0, 90) if rotate else (0,):
        text = ax.text(x, y, label, ha="center", va="center", rotation=rotation, fontsize=fontsize, linespacing=1.15)
        extent = text.get_window_extent(renderer)
        text.remove()
        if extent.width <= width_px and extent.height <= height_px:
            return rotation
    return None
