"""HandCue protocol: the one definition of every byte (no I/O here).

* :mod:`protocol.constants` - enums, limits, codes
* :mod:`protocol.table` - the step table layout, encoder, decoder
* :mod:`protocol.timeline` - the motor events a table produces
* :mod:`protocol.errors` - the exception hierarchy rooted at ``HandCueError``

``protocol/SPEC.md`` is the byte-level specification for firmware engineers.
"""
