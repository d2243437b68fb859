"""The companion's own BLE identity on the bumble backend: its address and its bonds.

A bond ties a band to the central's identity address, so a companion that bonds
must come back with the same address: both live in one directory, by default
``<user config dir>/handcue/ble`` (platformdirs; ``$XDG_CONFIG_HOME/handcue/ble`` on
Linux when that variable is set):

* ``address`` - the random static address, created the first time the companion pairs;
* ``bonds.json`` - bumble's :class:`~bumble.keys.JsonKeyStore` (the keys of every band bonded).

Nothing is written until a pairing; before that the central takes a new random
address each time, as an unpaired phone would.  bleak's platform backends keep their
bonds in the operating system instead.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

if TYPE_CHECKING:  # bumble loads only when BLE is used
    from bumble.keys import KeyStore

__all__ = ["CentralIdentity", "user_config_dir"]

APP_NAME = "handcue"


def user_config_dir() -> Path:
    """The user's HandCue configuration directory (honours ``XDG_CONFIG_HOME`` on Linux)."""
    return platformdirs.user_config_path(APP_NAME, appauthor=False)


@dataclasses.dataclass(frozen=True)
class CentralIdentity:
    """Where a companion keeps its BLE address and bonds."""

    directory: Path

    @classmethod
    def for_user(cls) -> CentralIdentity:
        """The identity of this user's companion, under :func:`user_config_dir`."""
        return cls(user_config_dir() / "ble")

    @property
    def address_path(self) -> Path:
        return self.directory / "address"

    @property
    def bonds_path(self) -> Path:
        return self.directory / "bonds.json"

    def address(self) -> str | None:
        """The stored address, or None if this companion never paired."""
        try:
            text = self.address_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        return text or None

    def ensure_address(self) -> str:
        """The stored address, created (a new random static address) if there is none."""
        existing = self.address()
        if existing is not None:
            return existing
        from bumble.hci import Address

        address = Address.generate_static_address().to_string(with_type_qualifier=False)
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.address_path.with_suffix(".tmp")
        temporary.write_text(address + "\n", encoding="ascii")
        os.replace(temporary, self.address_path)
        return address

    def keystore(self) -> KeyStore:
        """bumble's JSON key store in :attr:`bonds_path` (the file appears with the first bond)."""
        from bumble.keys import JsonKeyStore

        return JsonKeyStore(namespace=None, filename=str(self.bonds_path))
