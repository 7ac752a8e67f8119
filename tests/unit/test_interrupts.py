"""Signal handlers never wait on a lock the main thread holds (jobqueue.interrupts)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Each scenario runs in a process of its own: the defect is a main thread
# waiting for itself forever, which only a timeout from outside can end.
PRELUDE = """
import os, signal, threading, time
from jobqueue import JobQueue, interrupts

def handled():  # the handler ran: its thread was started (old code: never returns)
    deadline = time.monotonic() + 5
    while not any(t.name == "jobqueue-signal" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the handler did not run"
        time.sleep(0.01)
"""

WORKER = """
from jobqueue.worker import Worker

app = JobQueue("postgresql://nobody@127.0.0.1:1/none", schema="s", auto_migrate=False)
worker = Worker(app, concurrency=1)
interrupts.handle((signal.SIGTERM,), worker._on_signal, "jobqueue-signal")
with worker._wakeup._lock:  # the claim loop inside Wakeup.clear()
    os.kill(os.getpid(), signal.SIGTERM)  # its handler runs here, on this thread
    handled()  # while the lock is still held
assert worker._stopping.wait(5), "SIGTERM did not stop the worker"
print("stopped")
"""

BEAT = """
from jobqueue.beat import Beat

app = JobQueue("postgresql://nobody@127.0.0.1:1/none", schema="s", auto_migrate=False)
beat = Beat(app)
interrupts.handle((signal.SIGTERM,), beat._on_signal, "jobqueue-signal")
with beat._stop._cond:  # the beat loop inside Event.wait(), before it sleeps
    os.kill(os.getpid(), signal.SIGTERM)
    handled()
assert beat._stop.wait(5), "SIGTERM did not stop beat"
print("stopped")
"""


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PRELUDE) + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_sigterm_while_the_claim_loop_holds_its_wakeup_lock_stops_the_worker() -> None:
    """The worker's handler used to wake the claim loop itself: under the
    wake-up's lock, which the claim loop (the same thread) held inside
    clear(), so the worker never stopped (a fencing test hung on it)."""
    done = _run(WORKER)
    assert done.returncode == 0 and done.stdout.strip() == "stopped", done.stderr[-2000:]


def test_sigterm_while_beat_holds_its_stop_events_lock_stops_beat() -> None:
    done = _run(BEAT)
    assert done.returncode == 0 and done.stdout.strip() == "stopped", done.stderr[-2000:]
