"""Work on another thread while the test reads.

Some steps cannot finish until the test has read what the server sends: a
flood fills the socket buffers, and ``server_close()`` waits for every
client to take ``#server_shutdown``.  A test that ran such a step first and
read afterwards would pass only where the kernel's buffers happened to hold
it all.  :func:`in_background` runs the step on a thread while the block
reads, and fails the test if the step has not ended soon after.
"""

import contextlib
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def in_background(step: Callable[[], object], seconds: float) -> Iterator[None]:
    """Run ``step`` on a thread during the block; fail unless it ends within ``seconds`` after."""
    thread = threading.Thread(target=step, daemon=True)
    thread.start()
    yield
    thread.join(timeout=seconds)
    name = getattr(step, "__qualname__", repr(step))
    assert not thread.is_alive(), "%s still running %.0f s after the block" % (name, seconds)
