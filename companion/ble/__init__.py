"""Bluetooth LE support of the companion.

:mod:`companion.ble.bumble_backend` is a bleak backend on the bumble stack (like
bleak-esphome is a third-party backend): with ``--hci TRANSPORT`` or
``HANDCUE_HCI`` the companion's unchanged bleak code runs through bumble on that
HCI transport; without it bleak's platform backend is used.
"""
