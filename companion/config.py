"""The user's settings and what the companion remembers between runs.

* ``config.toml`` in the user's config folder (platformdirs: ``$XDG_CONFIG_HOME/handcue``,
  by default ``~/.config/handcue`` on Linux, ``~/Library/Application Support/handcue`` on
  macOS, ``%LOCALAPPDATA%\\handcue`` on Windows) holds settings, set with ``handcue config``.
  Today there is one: ``address``, the band used when ``--to`` is not given.
* ``bands.json`` beside it remembers bands: the addresses seen recently (by ``scan`` and by
  every command that reached a band), which shell completion of ``--to`` offers, and the BLE
  address (and address type) of each band reached by name, so that the next command connects
  to it without a scan.
* ``gatt.json`` in the user's cache folder (``$XDG_CACHE_HOME/handcue``): the GATT handles of
  bands the bumble BLE backend talked to (:mod:`companion.ble.gatt_cache`), checked against the
  band's Database Hash before use.  Operating-system BLE stacks keep their own.

Nothing here talks to a band; the files are small and read only when a command needs them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from .errors import HandCueError

ENV_ADDRESS = "HANDCUE_ADDRESS"
SETTINGS = {"address": "the band used when --to is not given (e.g. serial:/dev/ttyUSB0, ble:HandCue-1A2B)"}
RECENT_BANDS = 20
"""How many recently seen bands completion offers."""


class ConfigError(HandCueError):
    """The config file cannot be read or a setting is unknown."""


def config_path() -> Path:
    import platformdirs

    return platformdirs.user_config_path("handcue", appauthor=False) / "config.toml"


def bands_path() -> Path:
    return config_path().with_name("bands.json")


def read_config() -> dict[str, str]:
    path = config_path()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from exc
    return {key: str(value) for key, value in document.items() if key in SETTINGS}


def write_config(settings: dict[str, str]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# handcue settings; edit with `handcue config set KEY VALUE`"]
    lines += [f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in sorted(settings.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def check_key(key: str) -> None:
    if key not in SETTINGS:
        raise ConfigError(f"unknown setting {key!r}; settings: {', '.join(f'{k} ({v})' for k, v in SETTINGS.items())}")


def default_address() -> tuple[str, str] | None:
    """The default band and where it comes from (``HANDCUE_ADDRESS`` first, then the config file), or None."""
    if os.environ.get(ENV_ADDRESS):
        return os.environ[ENV_ADDRESS], ENV_ADDRESS
    try:
        address = read_config().get("address")
    except ConfigError:
        return None
    return (address, str(config_path())) if address else None


def _read_bands() -> dict[str, Any]:
    """``bands.json`` as ``{"recent": [...], "ble": {name: {"address", "type"}}}``; empty when absent or unreadable."""
    try:
        value = json.loads(bands_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if isinstance(value, list):  # the first layout: the recent list alone
        return {"recent": value}
    return value if isinstance(value, dict) else {}


def _write_bands(document: dict[str, Any]) -> None:
    path = bands_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=1), encoding="utf-8")
        temporary.replace(path)  # a reader never sees half a file
    except OSError:
        pass  # a cache only saves time


def recent_bands() -> list[str]:
    """Addresses of the bands seen recently, newest first; empty when nothing is cached."""
    value = _read_bands().get("recent")
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def remember_bands(addresses: list[str]) -> None:
    """Put ``addresses`` first in the recently-seen list; a cache that cannot be written is skipped."""
    if not addresses:
        return
    document = _read_bands()
    document["recent"] = list(dict.fromkeys([*addresses, *recent_bands()]))[:RECENT_BANDS]
    _write_bands(document)


@dataclasses.dataclass(frozen=True)
class KnownBleAddress:
    """Where a band named ``name`` was last reached over BLE."""

    address: str
    """``AA:BB:CC:DD:EE:FF`` (on macOS a UUID)."""
    address_type: str
    """``"public"`` or ``"random"``."""


def known_ble_address(name: str) -> KnownBleAddress | None:
    """The BLE address a band advertising as ``name`` had last time, or None."""
    table = _read_bands().get("ble")
    entry = table.get(name.casefold()) if isinstance(table, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
        return None
    address_type = entry.get("type")
    return KnownBleAddress(entry["address"], address_type if address_type in ("public", "random") else "random")


def remember_ble_address(name: str, known: KnownBleAddress | None) -> None:
    """Remember (or with None forget) the BLE address of the band advertising as ``name``."""
    document = _read_bands()
    table = document.get("ble") if isinstance(document.get("ble"), dict) else {}
    assert isinstance(table, dict)
    key = name.casefold()
    if known is None:
        if table.pop(key, None) is None:
            return
    else:
        if table.get(key) == {"address": known.address, "type": known.address_type}:
            return  # nothing new: spare the write
        table[key] = {"address": known.address, "type": known.address_type}
        while len(table) > RECENT_BANDS:
            table.pop(next(iter(table)))
    document["ble"] = table
    _write_bands(document)


class BleAddressBook:
    """The BLE addresses of bands reached by name, kept in ``bands.json`` (what a BLE transport is handed)."""

    def get(self, name: str) -> KnownBleAddress | None:
        return known_ble_address(name)

    def put(self, name: str, known: KnownBleAddress) -> None:
        remember_ble_address(name, known)

    def forget(self, name: str) -> None:
        remember_ble_address(name, None)


def gatt_cache_path() -> Path:
    """Where the bumble BLE backend remembers the GATT handles of bands (``gatt.json`` in the user's cache folder)."""
    import platformdirs

    return platformdirs.user_cache_path("handcue", appauthor=False) / "gatt.json"


def tables_path() -> Path:
    import platformdirs

    return platformdirs.user_cache_path("handcue", appauthor=False) / "tables"


def remember_table(data: bytes) -> None:
    """Keep a copy of an uploaded table under its file CRC-32, so that the steps a band reports can be numbered later."""
    import zlib

    folder = tables_path()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{zlib.crc32(data):08X}.hcue").write_bytes(data)
    except OSError:
        pass  # a cache only helps the live line


def known_table(crc32: int) -> bytes | None:
    """The table with this file CRC-32 if this computer uploaded it, else None."""
    import zlib

    try:
        data = (tables_path() / f"{crc32:08X}.hcue").read_bytes()
    except OSError:
        return None
    return data if zlib.crc32(data) == crc32 else None
