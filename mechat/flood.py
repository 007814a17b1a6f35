"""Flood control: a token bucket per connection (spec §9.5).

Each line costs one token.  Tokens come back at ``rate`` per second, up to
one second's worth, so a client may send a burst of ``rate`` lines at once
and then ``rate`` lines a second for ever.  A rate below one a second (the
/all limit of §9.7 may be) still holds one token, or nothing would ever
pass.  The bucket belongs to one handler thread, so it needs no lock.
"""

import time
from typing import Callable


class TokenBucket:
    """Allow ``rate`` events a second on average, in bursts of up to ``rate`` (at least one)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(rate, 1.0)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def allow(self) -> bool:
        """Spend one token if there is one; a rate of 0 allows everything."""
        if not self.rate:
            return True
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
