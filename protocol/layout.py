"""One way to declare a byte layout: dataclass fields that carry their construct.

A model class is a frozen dataclass made by :func:`laid_out` (or a subclass of
a base that applies it, as :class:`protocol.messages.Body` does); each field
says how its bytes read, ``wire(subcon)``, and :func:`layout_of` derives from
those fields the construct that parses bytes straight into the class and
builds bytes from it, so the layout is never restated beside the model.

Two placements, one helper:

* sequential (message bodies): fields follow each other in declaration order;
* fixed offsets (step-table records): every field names its offset,
  ``wire(subcon, at=4)``, because that is what a firmware engineer looks up
  and the constructor keeps its own argument order; :func:`layout_of` checks
  that the offsets tile the layout without a gap or an overlap.

What the bytes mean beyond a plain number is a coding: an adapter on the
field, so the model speaks milliseconds, enums, names and ``None`` while the
bytes keep their units, codes and markers (:class:`Units`, :class:`Coded`,
:class:`Marker`, :class:`Indexed`, :class:`Saturating`).  :func:`raw_layout_of`
strips the codings again: the wire values SPEC.md tables.  Every coding here
also compiles (``_emitparse``) so that a compiled layout parses as fast as
plain integers.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Callable
from enum import IntEnum
from typing import Any, TypeVar, cast, dataclass_transform

import construct as c  # type: ignore[import-untyped,unused-ignore]

T = TypeVar("T")

_SUBCON = "layout.subcon"
_OFFSET = "layout.offset"


def wire(subcon: Any, *, at: int | None = None, default: Any = dataclasses.MISSING) -> Any:
    """A model field read with ``subcon``; ``at`` is its byte offset in a fixed-offset layout."""
    return dataclasses.field(default=default, metadata={_OFFSET: at, _SUBCON: subcon})


def field_subcon(cls: type[Any], name: str) -> Any:
    """The construct (with its :class:`Coding`, if any) that field ``name`` of a laid-out class is read with."""
    return {f.name: f for f in dataclasses.fields(cls)}[name].metadata[_SUBCON]


@dataclass_transform(frozen_default=True, field_specifiers=(wire,))
def laid_out(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen dataclass whose fields are declared with :func:`wire`.

    It behaves as ``dataclasses.dataclass(frozen=True)`` makes it, but its ``__eq__``, ``__hash__``
    and ``__repr__`` are shared by every laid-out class (they read the class's fields, named once
    here) instead of generated for each: Python 3.11 compiles every generated method from source,
    about 0.1 ms each, and a command imports some 40 laid-out classes.  A method the class defines
    itself is kept, as dataclasses keeps it.
    """
    names = cls.__dict__
    shared = {"__eq__": _laid_out_eq, "__repr__": _laid_out_repr}
    for name, method in shared.items():
        if name not in names:
            setattr(cls, name, method)
    # As dataclasses: a __hash__ of the class's own is kept, unless it is the None that defining __eq__ implies.
    if "__hash__" not in names or (names["__hash__"] is None and "__eq__" in names and names["__eq__"] is not _laid_out_eq):
        cls.__hash__ = _laid_out_hash  # type: ignore[method-assign]
    made: Any = dataclasses.dataclass(frozen=True, eq=False, repr=False)(cls)
    fields = dataclasses.fields(made)
    made.__laid_out_compare__ = tuple(f.name for f in fields if f.compare)
    made.__laid_out_hash__ = tuple(f.name for f in fields if (f.compare if f.hash is None else f.hash))
    made.__laid_out_repr__ = tuple(f.name for f in fields if f.repr)
    return cast(type[T], made)


def _laid_out_eq(self: Any, other: Any) -> Any:
    """dataclasses' ``__eq__``: the same class, and equal compared fields in order."""
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = self.__laid_out_compare__
    return tuple(getattr(self, name) for name in names) == tuple(getattr(other, name) for name in names)


def _laid_out_hash(self: Any) -> int:
    """dataclasses' ``__hash__`` of a frozen class: the hash of the hashed fields' values."""
    return hash(tuple(getattr(self, name) for name in self.__laid_out_hash__))


@reprlib.recursive_repr()
def _laid_out_repr(self: Any) -> str:
    """dataclasses' ``__repr__``: ``Class(field=value, ...)``."""
    return f"{self.__class__.__qualname__}({', '.join(f'{name}={getattr(self, name)!r}' for name in self.__laid_out_repr__)})"


def _placed(cls: type[Any], start: int) -> list[tuple[str, Any]]:
    """The fields of ``cls`` in byte order, as (name, subcon); offsets, if given, checked from ``start``."""
    fields = dataclasses.fields(cls)
    offsets = [f.metadata[_OFFSET] for f in fields]
    if all(offset is None for offset in offsets):
        return [(f.name, f.metadata[_SUBCON]) for f in fields]
    if None in offsets:
        raise ValueError(f"{cls.__name__}: give every field an offset, or none")
    position = start
    for f in sorted(fields, key=lambda f: f.metadata[_OFFSET]):
        if f.metadata[_OFFSET] != position:
            raise ValueError(f"{cls.__name__}.{f.name} is declared at offset {f.metadata[_OFFSET]}; the fields before it end at {position}")
        position += f.metadata[_SUBCON].sizeof()
    return [(f.name, f.metadata[_SUBCON]) for f in sorted(fields, key=lambda f: f.metadata[_OFFSET])]


def layout_of(cls: type[Any], *, start: int = 0, whole: bool = False) -> Any:
    """The construct of a :func:`laid_out` class: bytes <-> instances; offsets count from ``start``.

    ``whole``: the layout must also reach the end of its bytes (a whole message body).
    """
    return _Model(cls, _placed(cls, start), whole)


def raw_layout_of(cls: type[Any], *, start: int = 0) -> Any:
    """The same bytes as :func:`layout_of`, read as raw wire values: a ``Struct`` with every coding stripped."""
    return c.Struct(*(name / _raw(subcon) for name, subcon in _placed(cls, start)))


class Compiled:
    """A layout that a process reads many times, compiled once that pays: ``construct``'s ``.compile()``
    of ``layout``, the same declaration.

    Compiling generates and compiles Python source (0.4-1.4 ms per layout), which a process that reads a
    few records never earns back: a compiled parse saves about 30 us.  So the first ``compile_after - 1``
    uses parse and build with the declared layout itself, and the next one compiles it (a band's boot
    reads up to 512 journal entries; ``handcue status`` numbers the steps of one 10-record table).
    """

    COMPILE_AFTER = 48
    """Uses after which compiling has paid for itself (1.4 ms / 30 us per use, rounded)."""

    def __init__(self, layout: Any, *, compile_after: int = COMPILE_AFTER) -> None:
        self.layout = layout
        self.compile_after = compile_after
        self.uses = 0
        self.compiled: Any = None
        """The compiled construct once :attr:`compile_after` uses made it; None before."""

    def _get(self) -> Any:
        compiled = self.compiled
        if compiled is not None:
            return compiled
        self.uses += 1
        if self.uses < self.compile_after:
            return self.layout
        compiled = self.compiled = self.layout.compile()
        return compiled

    def parse(self, data: bytes) -> Any:
        """``data`` parsed with the layout (compiled once it is used often enough)."""
        return self._get().parse(data)

    def build(self, obj: Any) -> bytes:
        """``obj`` built with the layout (compiled once it is used often enough)."""
        return bytes(self._get().build(obj))

    def sizeof(self) -> int:
        """The layout's size in bytes (no compiling needed)."""
        return int(self.layout.sizeof())


def _raw(subcon: Any) -> Any:
    return _raw(subcon.subcon) if isinstance(subcon, Coding) else subcon


class _Model(c.Adapter):  # type: ignore[misc,unused-ignore]
    """Bytes <-> an instance of a model class (a dataclass), field by field."""

    def __init__(self, cls: type[Any], fields: list[tuple[str, Any]], whole: bool = False) -> None:
        super().__init__(c.Struct(*(name / subcon for name, subcon in fields), *([c.Terminated] if whole else [])))
        self.cls, self.fields, self.whole = cls, fields, whole

    def _decode(self, obj: Any, context: Any, path: Any) -> Any:
        return self.cls(**{name: obj[name] for name, _ in self.fields})

    def _encode(self, obj: Any, context: Any, path: Any) -> dict[str, Any]:
        return {name: getattr(obj, name) for name, _ in self.fields}

    def _emitparse(self, code: Any) -> str:
        if self.whole:
            raise NotImplementedError  # construct then links this instance's _parse
        # Read the fields into locals and call the class: no Container in between.
        function = f"parse_model_{code.allocateId()}"
        lines = [f"def {function}(io, this):"]
        lines += [f"    {name} = {subcon._compileparse(code)}" for name, subcon in self.fields]
        lines.append(f"    return linkedinstances[{id(self)}].cls({', '.join(f'{name}={name}' for name, _ in self.fields)})")
        code.linkedinstances[id(self)] = self
        code.append("\n".join(lines) + "\n")
        return f"{function}(io, this)"


# --------------------------------------------------------------------------
# Codings: what a field's bytes mean, as adapters (stripped by raw_layout_of)


class Coding(c.Adapter):  # type: ignore[misc,unused-ignore]
    """An adapter between a field's wire value and its model value; compiled layouts call ``_decode``."""

    absent: int | None = None
    """The wire value that means "none" (as opposed to a code this side does not know)."""

    def _emitparse(self, code: Any) -> str:
        code.linkedinstances[id(self)] = self
        return f"linkedinstances[{id(self)}]._decode({self.subcon._compileparse(code)}, None, None)"


class Units(Coding):
    """A count of ``unit_ms`` units in the bytes, milliseconds in the model."""

    def __init__(self, subcon: Any, unit_ms: int) -> None:
        super().__init__(subcon)
        self.unit_ms = unit_ms

    def _decode(self, obj: int, context: Any, path: Any) -> int:
        return obj * self.unit_ms

    def _encode(self, obj: int, context: Any, path: Any) -> int:
        units, rest = divmod(obj, self.unit_ms)
        if rest:
            raise c.MappingError(f"{obj} ms is not a multiple of {self.unit_ms} ms", path=path)
        return units

    def _emitparse(self, code: Any) -> str:
        return f"({self.subcon._compileparse(code)}) * {self.unit_ms}"


class Marker(Coding):
    """A reserved value in the bytes that means ``None`` in the model (0xFF: "no pattern", 0xFFFF: "no step")."""

    def __init__(self, subcon: Any, marker: int) -> None:
        super().__init__(subcon)
        self.marker = self.absent = marker

    def _decode(self, obj: int, context: Any, path: Any) -> int | None:
        return None if obj == self.marker else obj

    def _encode(self, obj: int | None, context: Any, path: Any) -> int:
        return self.marker if obj is None else obj

    def _emitparse(self, code: Any) -> str:
        function = f"none_if_{self.marker}"
        code.append(f"def {function}(value):\n    return None if value == {self.marker} else value\n")
        return f"{function}({self.subcon._compileparse(code)})"


class Coded(Coding):
    """An IntEnum member in the model.

    ``none``: the code that means ``None`` (if any).  A code the enum lacks
    raises ValueError (for a decoder to report), or reads as ``None`` when
    ``lenient`` (a message from a newer peer).
    """

    def __init__(self, subcon: Any, enum: type[IntEnum], *, none: int | None = None, lenient: bool = False) -> None:
        super().__init__(subcon)
        self.enum, self.none, self.lenient = enum, none, lenient
        self.absent = none

    def _decode(self, obj: int, context: Any, path: Any) -> IntEnum | None:
        if obj == self.none or (self.lenient and obj not in self.enum._value2member_map_):
            return None
        return self.enum(obj)

    def _encode(self, obj: IntEnum | None, context: Any, path: Any) -> int:
        if obj is not None:
            return int(obj)
        if self.none is None:
            raise ValueError(f"a {self.enum.__name__} is required")
        return self.none

    def _emitparse(self, code: Any) -> str:
        if self.none is not None or self.lenient:
            return str(super()._emitparse(code))
        code.linkedinstances[id(self)] = self
        return f"linkedinstances[{id(self)}].enum({self.subcon._compileparse(code)})"


class Indexed(Coding):
    """A name sent as its index in ``names``; indices beyond them read as ``None``."""

    def __init__(self, subcon: Any, names: tuple[str | None, ...]) -> None:
        super().__init__(subcon)
        self.names = names
        self.absent = names.index(None) if None in names else None

    def _decode(self, obj: int, context: Any, path: Any) -> str | None:
        return self.names[obj] if obj < len(self.names) else None

    def _encode(self, obj: str | None, context: Any, path: Any) -> int:
        return self.names.index(obj)


class Saturating(Coding):
    """A count that stops at ``limit`` instead of overflowing its field."""

    def __init__(self, subcon: Any, limit: int) -> None:
        super().__init__(subcon)
        self.limit = limit

    def _decode(self, obj: int, context: Any, path: Any) -> int:
        return obj

    def _encode(self, obj: int, context: Any, path: Any) -> int:
        return min(obj, self.limit)


# --------------------------------------------------------------------------
# Tagged unions and computed fields


class Tagged(c.Adapter):  # type: ignore[misc,unused-ignore]
    """A kind byte, then the layout of the model class that kind names."""

    def __init__(self, kind: Any, layouts: dict[IntEnum, tuple[type[Any], Any]]) -> None:
        super().__init__(c.Struct("kind" / kind, "body" / c.Switch(c.this.kind, {int(k): layout for k, (_, layout) in layouts.items()}, default=c.Error)))
        self.kinds = {cls: kind for kind, (cls, _) in layouts.items()}

    def _decode(self, obj: Any, context: Any, path: Any) -> Any:
        return obj.body

    def _encode(self, obj: Any, context: Any, path: Any) -> dict[str, Any]:
        return {"kind": int(self.kinds[type(obj)]), "body": obj}

    def _emitparse(self, code: Any) -> str:
        return f"({self.subcon._compileparse(code)}).body"


class Rebuild(c.Rebuild):  # type: ignore[misc,unused-ignore]
    """construct's Rebuild for a Python function of the content: a compiled layout calls the function instead of inlining it."""

    def __init__(self, subcon: Any, func: Callable[[Any], Any]) -> None:
        super().__init__(subcon, func)

    def _emitbuild(self, code: Any) -> str:
        raise NotImplementedError  # construct then links this instance's _build
