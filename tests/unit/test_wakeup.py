"""The claim loop's wake-up after the worker closed it: a late heartbeat that
reconnects the working session sets it (seen under load in
test_adversarial's heartbeat-in-flight test: EBADF)."""

from __future__ import annotations

import os

import pytest

from jobqueue.worker.wakeup import Wakeup


def test_a_closed_wakeup_writes_into_no_file_that_took_its_numbers() -> None:
    wakeup = Wakeup()
    wakeup.close()
    read, write = os.pipe()  # the lowest free numbers: usually the old pipe's
    try:
        wakeup.set()  # before the fix: EBADF, or a byte written into this pipe
        wakeup.clear()
        assert wakeup.wait(0) is False
        os.set_blocking(read, False)
        with pytest.raises(BlockingIOError):
            os.read(read, 1)
    finally:
        os.close(read)
        os.close(write)
    wakeup.close()  # twice is harmless
