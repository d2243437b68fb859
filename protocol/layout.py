"""One declaration for a byte layout and its model: dataclass fields that carry their construct.

A model class is a dataclass made by :func:`laid_out`; each field says where
its bytes sit and how they read, ``at(offset, subcon)``.  :func:`layout_of`
derives from those fields the construct that parses bytes straight into the
class and builds bytes from it, so the layout is never restated beside the
model.  Offsets are written out because they are what a firmware engineer
looks up (and the constructor keeps its own argument order); the derivation
checks that they tile the layout without a gap or an overlap.

Units and markers are adapters on a field, so the model speaks milliseconds,
enums and ``None`` while the bytes keep their 100 ms units, codes and 0xFF.
Every adapter here also compiles (``_emitparse``) so that a compiled layout
parses as fast as plain integers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import IntEnum
from typing import Any, TypeVar, dataclass_transform

import construct as c  # type: ignore[import-untyped,unused-ignore]

T = TypeVar("T")
E = TypeVar("E", bound=IntEnum)

_SUBCON = "layout.subcon"
_OFFSET = "layout.offset"


def at(offset: int, subcon: Any, *, default: Any = dataclasses.MISSING) -> Any:
    """A model field whose bytes start at ``offset`` and read with ``subcon``."""
    return dataclasses.field(default=default, metadata={_OFFSET: offset, _SUBCON: subcon})


@dataclass_transform(frozen_default=True, field_specifiers=(at,))
def laid_out(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen dataclass whose fields are declared with :func:`at`."""
    return dataclasses.dataclass(frozen=True)(cls)


def layout_of(cls: type[Any], *, start: int = 0) -> Any:
    """The construct of a :func:`laid_out` class, its fields ordered by offset from ``start``."""
    fields = sorted(dataclasses.fields(cls), key=lambda f: f.metadata[_OFFSET])
    position = start
    for f in fields:
        if f.metadata[_OFFSET] != position:
            raise ValueError(f"{cls.__name__}.{f.name} is declared at offset {f.metadata[_OFFSET]}; the fields before it end at {position}")
        position += f.metadata[_SUBCON].sizeof()
    return _Model(cls, [(f.name, f.metadata[_SUBCON]) for f in fields])


class _Model(c.Adapter):  # type: ignore[misc,unused-ignore]
    """Bytes <-> an instance of a model class (a dataclass), field by field."""

    def __init__(self, cls: type[Any], fields: list[tuple[str, Any]]) -> None:
        super().__init__(c.Struct(*(name / subcon for name, subcon in fields)))
        self.cls = cls
        self.fields = fields

    def _decode(self, obj: Any, context: Any, path: Any) -> Any:
        return self.cls(**{name: obj[name] for name, _ in self.fields})

    def _encode(self, obj: Any, context: Any, path: Any) -> dict[str, Any]:
        return {name: getattr(obj, name) for name, _ in self.fields}

    def _emitparse(self, code: Any) -> str:
        # Read the fields into locals and call the class: no Container in between.
        function = f"parse_model_{code.allocateId()}"
        lines = [f"def {function}(io, this):"]
        lines += [f"    {name} = {subcon._compileparse(code)}" for name, subcon in self.fields]
        lines.append(f"    return linkedinstances[{id(self)}].cls({', '.join(f'{name}={name}' for name, _ in self.fields)})")
        code.linkedinstances[id(self)] = self
        code.append("\n".join(lines) + "\n")
        return f"{function}(io, this)"


class Units(c.Adapter):  # type: ignore[misc,unused-ignore]
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


class Marker(c.Adapter):  # type: ignore[misc,unused-ignore]
    """A reserved value in the bytes that means ``None`` in the model (0xFF: "no pattern")."""

    def __init__(self, subcon: Any, marker: int) -> None:
        super().__init__(subcon)
        self.marker = marker

    def _decode(self, obj: int, context: Any, path: Any) -> int | None:
        return None if obj == self.marker else obj

    def _encode(self, obj: int | None, context: Any, path: Any) -> int:
        return self.marker if obj is None else obj

    def _emitparse(self, code: Any) -> str:
        function = f"none_if_{self.marker}"
        code.append(f"def {function}(value):\n    return None if value == {self.marker} else value\n")
        return f"{function}({self.subcon._compileparse(code)})"


class Coded(c.Adapter):  # type: ignore[misc,unused-ignore]
    """An IntEnum in the model; a value the enum lacks raises ValueError, for the decoder to report."""

    def __init__(self, subcon: Any, enum: type[IntEnum]) -> None:
        super().__init__(subcon)
        self.enum = enum

    def _decode(self, obj: int, context: Any, path: Any) -> IntEnum:
        return self.enum(obj)

    def _encode(self, obj: IntEnum, context: Any, path: Any) -> int:
        return int(obj)

    def _emitparse(self, code: Any) -> str:
        code.linkedinstances[id(self)] = self
        return f"linkedinstances[{id(self)}].enum({self.subcon._compileparse(code)})"


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
