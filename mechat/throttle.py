"""Login throttling: how fast a password may be guessed (protocol 2, accounts).

A guess costs the guesser one line and the server one scrypt hash, tens of
milliseconds of a core (see :mod:`mechat.accounts`), so an unthrottled
login is both a way to try a dictionary and a way to keep the server's
cores busy.  Two limits stop it, and both count failures only: a user who
types the right password is never slowed by them.

* **Per connection**, :class:`LoginTries`: 5 failed tries
  (:data:`MAX_FAILED_LOGINS`), then the server closes the connection.  A
  person mistypes a password once or twice; sshd closes after 6
  (``MaxAuthTries``).  Closing makes a script pay a new connection, and a
  new nickname deadline, for every 5 guesses.
* **Per address**, :class:`AddressThrottle`: a token bucket of failed tries
  for each address, refilled at 1 a second (:data:`DEFAULT_FAILED_LOGIN_RATE`)
  up to 5 (:data:`DEFAULT_FAILED_LOGIN_BURST`).  New connections do not
  reset it, so one address guesses at most 5 times at once and then once a
  second: 86,400 guesses a day, where unthrottled only the server's own
  hashing would slow it (20 guesses a second for each core it has).  Its
  failures then cost the server one hash a second, a few percent of a core.  A burst of
  5 matches the connection's tries, so a user who mistypes on one
  connection and reconnects is not made to wait.

An IPv6 client usually owns a whole /64 and can pick a new address in it
for every connection, so :func:`address_key` counts a /64 as one address.
Guessing spread over many addresses is not stopped here: locking an
account after failed tries would be, but it lets anyone lock anyone out,
which is worse for a chat server.

The clock is injectable, as :class:`mechat.flood.TokenBucket`'s, so the
tests step time by hand.  :class:`LoginTries` belongs to one handler
thread and needs no lock; :class:`AddressThrottle` is shared by all of them
and takes its own lock, which no method holds while it calls out.
"""

import ipaddress
import threading
import time
from typing import Callable, Dict, Tuple

#: Failed logins a connection may make; the server closes it after the last.
MAX_FAILED_LOGINS = 5

#: Failed logins an address may make a second, on average; 0 turns it off.
DEFAULT_FAILED_LOGIN_RATE = 1.0

#: Failed logins an address may make at once, after a quiet spell.
DEFAULT_FAILED_LOGIN_BURST = 5

#: Buckets kept before the first sweep of the full ones.
_FIRST_SWEEP = 1024


class LoginTries:
    """The failed logins of one connection, counted by its handler thread."""

    def __init__(self, limit: int = MAX_FAILED_LOGINS) -> None:
        self.limit = limit
        self.failed = 0

    def fail(self) -> bool:
        """Count one failed login; tell whether that was the last the connection may make."""
        self.failed += 1
        return self.failed >= self.limit


class AddressThrottle:
    """A token bucket of failed logins for each address, shared by every handler thread.

    A login takes a token before it hashes, and a login that succeeds gives
    it back: so only failures are counted, and two connections from one
    address that try at once can never spend more tokens than there are.
    """

    def __init__(
        self,
        rate: float = DEFAULT_FAILED_LOGIN_RATE,
        burst: int = DEFAULT_FAILED_LOGIN_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        #: Each address's tokens, and when they were counted.  An address
        #: whose bucket has filled again is the same as one never seen, so
        #: sweeps drop those: only addresses that failed lately are kept.
        self._buckets: Dict[str, Tuple[float, float]] = {}
        self._next_sweep = _FIRST_SWEEP

    def take(self, address: str) -> float:
        """Take a try for ``address``: return 0, or the seconds until it may try (nothing taken)."""
        if not self.rate:
            return 0.0
        with self._lock:
            tokens, now = self._tokens(address)
            if tokens < 1:
                self._buckets[address] = (tokens, now)
                return (1 - tokens) / self.rate
            self._buckets[address] = (tokens - 1, now)
            self._sweep_if_due(now)
            return 0.0

    def give_back(self, address: str) -> None:
        """Return the token that a login which succeeded took."""
        with self._lock:
            if address in self._buckets:  # else it has filled again and been swept
                tokens, now = self._tokens(address)
                self._buckets[address] = (min(self.burst, tokens + 1), now)

    def _tokens(self, address: str) -> Tuple[float, float]:
        """Return the tokens ``address`` has now, and now; the caller holds the lock."""
        now = self._clock()
        tokens, then = self._buckets.get(address, (self.burst, now))
        return min(self.burst, tokens + (now - then) * self.rate), now

    def _sweep_if_due(self, now: float) -> None:
        """Drop the buckets that are full again, once there are twice as many as last time."""
        if len(self._buckets) < self._next_sweep:
            return
        self._buckets = {
            address: (tokens, then)
            for address, (tokens, then) in self._buckets.items()
            if (now - then) * self.rate < self.burst - tokens
        }
        self._next_sweep = max(_FIRST_SWEEP, 2 * len(self._buckets))

    def __len__(self) -> int:
        return len(self._buckets)


def address_key(host: str) -> str:
    """Return what counts as one address: an IPv4 address, or an IPv6 /64."""
    try:
        address = ipaddress.ip_address(host.split("%")[0])  # a scope (fe80::1%eth0) is the same host
    except ValueError:
        return host  # not an IP address: a Unix socket's path, say
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
