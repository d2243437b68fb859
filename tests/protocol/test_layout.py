"""protocol.layout: the one declaration of a byte layout, used by table records (fixed offsets) and message bodies (in sequence)."""

from __future__ import annotations

from enum import IntEnum

import construct as c
import pytest

from protocol.layout import Coded, Indexed, Marker, Saturating, Units, laid_out, layout_of, raw_layout_of, wire


class Colour(IntEnum):
    RED = 1
    GREEN = 2


@laid_out
class Sequential:
    colour: Colour | None = wire(Coded(c.Int8ul, Colour, none=0, lenient=True))
    pause_ms: int = wire(Units(c.Int16ul, 10))
    slot: int | None = wire(Marker(c.Int8ul, 0xFF))
    side: str | None = wire(Indexed(c.Int8ul, (None, "left", "right")))
    count: int = wire(Saturating(c.Int8ul, 0xFF))


@laid_out
class Placed:
    """The same fields at explicit offsets, declared in another order."""

    side: str | None = wire(Indexed(c.Int8ul, (None, "left", "right")), at=4)
    colour: Colour | None = wire(Coded(c.Int8ul, Colour, none=0, lenient=True), at=0)
    slot: int | None = wire(Marker(c.Int8ul, 0xFF), at=3)
    count: int = wire(Saturating(c.Int8ul, 0xFF), at=5)
    pause_ms: int = wire(Units(c.Int16ul, 10), at=1)


BYTES = bytes.fromhex("02 2c01 ff 02 ff".replace(" ", ""))


@pytest.mark.parametrize("cls", [Sequential, Placed])
def test_fields_in_sequence_and_at_offsets_read_the_same_bytes(cls):
    layout = layout_of(cls)
    value = layout.parse(BYTES)
    assert value == cls(colour=Colour.GREEN, pause_ms=3000, slot=None, side="right", count=255)
    assert type(value.colour) is Colour
    assert layout.compile().parse(BYTES) == value
    assert layout.build(cls(colour=Colour.GREEN, pause_ms=3000, slot=None, side="right", count=1000)) == BYTES
    assert dict(raw_layout_of(cls).parse(BYTES)) | {"_io": None} == {"_io": None, "colour": 2, "pause_ms": 300, "slot": 0xFF, "side": 2, "count": 0xFF}


def test_lenient_codes_read_unknown_and_none_codes_as_none_and_strict_codes_refuse_them():
    lenient, strict = Coded(c.Int8ul, Colour, none=0, lenient=True), Coded(c.Int8ul, Colour)
    assert [lenient.parse(bytes([code])) for code in (0, 1, 9)] == [None, Colour.RED, None]
    assert [lenient.compile().parse(bytes([code])) for code in (0, 1, 9)] == [None, Colour.RED, None]
    assert lenient.build(None) == b"\x00"
    with pytest.raises(ValueError, match="9 is not a valid Colour"):
        strict.parse(b"\x09")
    with pytest.raises(ValueError, match="9 is not a valid Colour"):
        strict.compile().parse(b"\x09")
    with pytest.raises(ValueError, match="a Colour is required"):
        strict.build(None)


def test_a_layout_that_mixes_placed_and_unplaced_fields_is_refused():
    @laid_out
    class Mixed:
        first: int = wire(c.Int8ul, at=0)
        second: int = wire(c.Int8ul)

    with pytest.raises(ValueError, match="Mixed: give every field an offset, or none"):
        layout_of(Mixed)


def test_a_whole_layout_refuses_trailing_bytes():
    whole = layout_of(Sequential, whole=True)
    assert whole.parse(BYTES) == layout_of(Sequential).parse(BYTES)
    with pytest.raises(c.TerminatedError):
        whole.parse(BYTES + b"\x00")


def test_a_laid_out_class_behaves_as_a_frozen_dataclass_with_methods_shared_not_generated():
    """Equality, hashing, repr and immutability are those of ``dataclasses.dataclass(frozen=True)``;
    ``__eq__``, ``__hash__`` and ``__repr__`` are one function for every laid-out class (Python 3.11
    compiles each generated method from source: about 0.1 ms each, some 40 classes per command)."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Reference:
        colour: Colour | None
        pause_ms: int
        slot: int | None
        side: str | None
        count: int

    values = {"colour": Colour.RED, "pause_ms": 300, "slot": None, "side": "left", "count": 7}
    ours, again, other, reference = Sequential(**values), Sequential(**values), Sequential(**{**values, "count": 8}), Reference(**values)
    assert ours == again and hash(ours) == hash(again) == hash(reference) and ours != other
    assert ours != reference and (ours == reference) is False  # another class: NotImplemented both ways, as dataclasses
    assert repr(ours) == repr(reference).replace(Reference.__qualname__, "Sequential", 1)
    assert repr(ours).startswith("Sequential(colour=<Colour.RED: 1>, pause_ms=300,")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ours.count = 9  # type: ignore[misc]
    assert {ours: 1}[again] == 1 and dataclasses.replace(ours, count=8) == other
    assert Sequential.__eq__ is Placed.__eq__ and Sequential.__hash__ is Placed.__hash__ and Sequential.__repr__ is Placed.__repr__

    @laid_out
    class Own:
        """A method the class defines itself is kept; the hash is still the fields' (as dataclasses: frozen and eq)."""

        value: int = wire(c.Int8ul)

        def __eq__(self, other: object) -> bool:
            return True

    assert Own(1) == Own(2) and hash(Own(1)) == hash((1,))
