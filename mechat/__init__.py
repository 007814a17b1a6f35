"""mechat: a teaching chat server that pairs two strangers and relays their lines.

The package is split one concern per module (see ``docs/architecture``):

* :mod:`mechat.protocol`   -- the wire rules, limits and notices; no I/O at all.
* :mod:`mechat.matchmaker` -- who is waiting, who is paired; one Condition.
* :mod:`mechat.server`     -- a thin ThreadingTCPServer around the two above.
* :mod:`mechat.client`     -- the terminal client: a reader and a writer thread.
* :mod:`mechat.__main__`   -- the command line, wiring only.
"""

__version__ = "1.0.0"
