"""A bleak backend named on the command line: ``--ble-backend module:attr``.

The name uses entry-point syntax (``package.module:attribute.path``).  What it names
decides how the backend is built, so any bleak backend plugs in without a change to
the companion (bleak-esphome for ESPHome Bluetooth proxies, a bumble host, a vendor's):

* a :class:`~companion.ble.backend.BleBackend` - used as is;
* a bleak client backend class (a :class:`bleak.backends.client.BaseBleakClient`
  subclass) - connections go through it, scanning through bleak's platform scanner
  unless a scanner class is named too, after a comma
  (``pkg.mod:Client,pkg.mod:Scanner``);
* any other callable - called without arguments once per command; it returns a
  ``BleBackend``, or an async context manager (opened for the command, closed after it)
  whose value is a ``BleBackend`` or has a ``backend`` attribute that is one (as
  :class:`~companion.ble.bumble_backend.BumbleCentral` has).  For example
  ``companion.ble.bumble_backend:BumbleCentral.from_environment``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator
from typing import Any

from ..errors import AddressError
from .backend import BleBackend

__all__ = ["named_backend", "resolve"]


def resolve(name: str) -> Any:
    """The object ``module:attr.path`` names.

    Raises:
        AddressError: the name is malformed, or the module or attribute does not exist.
    """
    module_name, colon, path = name.strip().partition(":")
    if not colon or not module_name or not path:
        raise AddressError(f"--ble-backend {name!r}: expected module:attribute, e.g. bleak_esphome_clinic:backend")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise AddressError(f"--ble-backend {name!r}: cannot import {module_name}: {exc}") from exc
    for part in path.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise AddressError(f"--ble-backend {name!r}: {module_name} has no attribute {path}") from None
    return value


def _backend_classes(names: list[str]) -> BleBackend | None:
    """A backend from bleak backend classes, or None if the names are not all such classes."""
    from bleak.backends.client import BaseBleakClient
    from bleak.backends.scanner import BaseBleakScanner

    client: type[BaseBleakClient] | None = None
    scanner: type[BaseBleakScanner] | None = None
    for name in names:
        value = resolve(name)
        if isinstance(value, type) and issubclass(value, BaseBleakClient):
            client = value
        elif isinstance(value, type) and issubclass(value, BaseBleakScanner):
            scanner = value
        else:
            return None
    return BleBackend(scanner=scanner, client=client, description=f"via {', '.join(names)}")


def _as_backend(value: Any, name: str) -> BleBackend:
    backend = value if isinstance(value, BleBackend) else getattr(value, "backend", None)
    if not isinstance(backend, BleBackend):
        raise AddressError(f"--ble-backend {name!r} gave {type(value).__name__}, not a BleBackend (nor an object with .backend)")
    return backend


@contextlib.asynccontextmanager
async def named_backend(name: str) -> AsyncIterator[BleBackend]:
    """The backend ``name`` designates (see the module's description), for one command."""
    names = [part.strip() for part in name.split(",") if part.strip()]
    from_classes = _backend_classes(names)
    if from_classes is not None:
        yield from_classes
        return
    if len(names) != 1:
        raise AddressError(f"--ble-backend {name!r}: a comma joins only bleak client and scanner classes")
    value = resolve(names[0])
    if isinstance(value, BleBackend):
        yield value
        return
    if not callable(value):
        raise AddressError(f"--ble-backend {name!r} names a {type(value).__name__}: expected a bleak backend class, a BleBackend or a callable")
    made = value()
    if hasattr(made, "__aenter__") and hasattr(made, "__aexit__"):
        async with made as opened:
            yield _as_backend(opened, name)
    else:
        yield _as_backend(made, name)
