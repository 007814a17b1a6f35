"""A port where nothing listens, for the tests of "no server there".

Binding port 0, closing the socket and then connecting to its number is a
race: another socket may take the port in between, and a connect can even
connect to itself.  :func:`refusing_port` keeps the port bound, but not
listening, while the test runs: nobody else can bind it, and the kernel
answers every connect to it with a refusal.
"""

import contextlib
import socket
from typing import Iterator


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """Yield a port on 127.0.0.1 that refuses every connection until the block ends."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, never listen(): a connect gets ECONNREFUSED
        yield int(holder.getsockname()[1])
