"""Run ``python -m mechat serve`` as a child process for a benchmark, and stop it by its PID.

The server chooses its own port: it binds ``127.0.0.1:0`` and says which
port it got in its start-up log line, ``... listening on 127.0.0.1:PORT``.
Choosing a free port here and passing it on would leave a moment in which
another process on this shared machine could take it.

The log goes to a file, not to a pipe.  The server logs a line or two for
every client that names itself, and a pipe that nobody empties fills after
64 KiB and then blocks the server in the middle of a measurement.  The file
also keeps the warnings (a client dropped, §9.4) for the report to count.

The benchmark reads the server's CPU time from ``/proc/PID/stat`` where
there is one (Linux), so it can say whether the server or the load was the
bottleneck; elsewhere that figure is simply missing.
"""

import os
import re
import signal
import subprocess
import sys
import time
from typing import List, Optional

#: What the server logs once it listens (mechat/__main__.py, run_serve).
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")

#: Seconds the server may take to start listening: a cold import on a busy machine.
START_TIMEOUT = 15.0

#: Seconds between two looks at the log while the server starts.
LOG_POLL = 0.02

#: Seconds the server may take to stop after SIGINT before it is killed; it
#: promises 2 (spec §10), and this machine is shared.
STOP_GRACE = 5.0

#: Clock ticks a second, the unit of the CPU times in /proc/PID/stat.
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ServerProcess:
    """One mechat server on a loopback port, with its log in a file."""

    def __init__(self, extra_args: List[str], log_path: str, cpu: Optional[int] = None) -> None:
        self.argv = [sys.executable, "-m", "mechat", "serve", "--host", "127.0.0.1", "--port", "0"]
        self.argv += extra_args
        self.log_path = log_path
        self.cpu = cpu  # the one CPU to run on, or None to let the server choose
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.port = 0

    def start(self, cwd: str) -> int:
        """Start the server from ``cwd`` (so that its own ``mechat`` is the one run); return its port."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=None if self.cpu is None else self._pin,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            found = LISTENING.search(self.log())
            if found:
                self.port = int(found.group(1))
                return self.port
            if self.process.poll() is not None:
                raise RuntimeError("the server exited with %d: %s" % (self.process.returncode, self.tail()))
            time.sleep(LOG_POLL)
        self.stop()
        raise RuntimeError("the server did not listen within %g s: %s" % (START_TIMEOUT, self.tail()))

    def _pin(self) -> None:
        """In the child, before exec: allow only our CPU, which the server then pins itself to."""
        assert self.cpu is not None
        os.sched_setaffinity(0, {self.cpu})

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> Optional[float]:
        """Return the CPU time the server has used so far, user and system, or None where unknown."""
        try:
            with open("/proc/%d/stat" % self.pid) as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime and stime, proc(5)

    def stop(self) -> Optional[int]:
        """Stop the server with SIGINT, then SIGKILL after STOP_GRACE; return its exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            # Windows can send a child no SIGINT; terminate() is its stop.
            if os.name == "posix":
                self.process.send_signal(signal.SIGINT)
            else:
                self.process.terminate()
            try:
                self.process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_GRACE)
        return self.process.returncode

    def log(self) -> bytes:
        """Return the server's log so far."""
        with open(self.log_path, "rb") as log:
            return log.read()

    def count_in_log(self, text: bytes) -> int:
        """Return how many log lines contain ``text``."""
        return sum(1 for line in self.log().splitlines() if text in line)

    def tail(self, lines: int = 5) -> str:
        """Return the last lines of the log, for an error message."""
        return " | ".join(self.log().decode("utf-8", "replace").splitlines()[-lines:])
