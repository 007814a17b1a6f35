"""Flood control: a token bucket per connection (spec §9.5).

Each line costs one token.  Tokens come back at ``rate`` per second, up to
one second's worth, so a client may send a burst of ``rate`` lines at once
and then ``rate`` lines a second for ever.  The bucket belongs to one
handler thread, so it needs no lock.
"""

import time
from typing import Callable


class TokenBucket:
    """Allow ``rate`` events a second on average, in bursts of up to ``rate``."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._last = clock()

    def allow(self) -> bool:
        """Spend one token if there is one; a rate of 0 allows everything."""
        if not self.rate:
            return True
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
