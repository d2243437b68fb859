"""The one walk over a routine's iterations: every step iteration and loop pass in play order.

A routine is a tree of steps and loops, each played ``count`` times; an
iteration of a loop or step that goes over hands or fingers binds the hand
or finger its body plays on (``Iterate``).  :func:`iterations` expands that
tree analytically (no clock), with each iteration's start time, hand,
finger and round numbers.  It serves the timeline (cue times), ``handcue
inspect``, the plot, the card and the routine's safety check; it walks a
table's records (:class:`protocol.table.Node`) and the routine model's steps
and blocks alike, since both are items with ``iterate``, ``count``,
``duration_ms`` and a ``body`` (None for a step).

The band's interpreter does not use it: it executes the table bytes on its
own, so that the two implementations check each other.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from .constants import FINGERS, Hands, Iterate


class Played(Protocol):
    """What the walk needs of a step or a loop."""

    @property
    def iterate(self) -> Iterate: ...

    @property
    def count(self) -> int: ...

    @property
    def duration_ms(self) -> int:
        """One iteration: a step's duration, or one pass through a loop's body."""
        ...

    @property
    def body(self) -> Sequence[Played] | None:
        """A loop's items; None for a step."""
        ...


P = TypeVar("P", bound=Played)


@dataclass(frozen=True)
class Iteration(Generic[P]):
    """Iteration ``index`` of ``item`` (a step, or a pass through a loop), where the routine plays it."""

    item: P
    index: int
    t_ms: int
    hand: str | None
    finger: str | None
    rounds: tuple[int, ...]
    """1-based round numbers of the enclosing plain-repeat loops with count > 1 (a loop pass includes its own)."""
    depth: int
    """How many loops enclose ``item``."""

    @property
    def is_step(self) -> bool:
        return self.item.body is None

    @property
    def duration_ms(self) -> int:
        return self.item.duration_ms


def bind(iterate: Iterate, iteration: int, hands: tuple[str, ...], hand: str | None, finger: str | None) -> tuple[str | None, str | None]:
    """The hand and finger a step plays on during ``iteration`` of a loop or step."""
    if iterate == Iterate.HAND:
        return hands[iteration], finger
    if iterate == Iterate.FINGER:
        return hand, FINGERS[iteration]
    return hand, finger


def iterations(items: Sequence[P], hands: Hands) -> Iterator[Iteration[P]]:
    """Every loop pass and step iteration of ``items`` in play order (a loop pass comes before its body)."""
    order = hands.order
    default_hand = order[0] if len(order) == 1 else None
    clock = [0]

    def walk(items: Sequence[P], hand: str | None, finger: str | None, rounds: tuple[int, ...], depth: int) -> Iterator[Iteration[P]]:
        for item in items:
            body = item.body
            for index in range(item.count):
                h, f = bind(item.iterate, index, order, hand, finger)
                if body is None:
                    yield Iteration(item, index, clock[0], h, f, rounds, depth)
                    clock[0] += item.duration_ms
                    continue
                inner = (*rounds, index + 1) if item.iterate == Iterate.NONE and item.count > 1 else rounds
                yield Iteration(item, index, clock[0], h, f, inner, depth)
                yield from walk(body, h, f, inner, depth + 1)  # type: ignore[arg-type]  # a body holds items of its parent's type

    return walk(items, default_hand, None, (), 0)
