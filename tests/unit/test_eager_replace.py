"""self.replace() in eager mode and Task.apply(), with no database at all
(the fixtures of tests/unit/test_eager.py: a connection attempt fails the test)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jobqueue import ChordMembershipError, JobQueue, chord
from tests.apps_replace import ReplacementError, build
from tests.unit.test_eager import _closed_port, no_connection  # noqa: F401


@pytest.fixture
def rq() -> Iterator[Any]:
    app = JobQueue(f"postgresql://nobody@127.0.0.1:{_closed_port()}/none", embedded=False)
    app.conf.eager = True
    yield build(app)
    app.close()


def test_eager_replace_with_each_kind(rq: Any) -> None:
    become = rq.become
    assert become.delay(1, "task").get() == 101
    assert become.delay(1, "chain").get() == 12
    assert become.delay(1, "group").get() == [2, 3]
    assert become.delay(3, "chord").get() == 8
    assert become.delay(1, "become").get() == 13
    assert become.apply((1, "chain")).get() == 12


def test_eager_replace_keeps_callbacks_and_chord_place(rq: Any) -> None:
    add, become, identity = rq.add, rq.become, rq.identity
    assert (add.s(1, 1) | become.s("chain") | add.s(1000))().get() == 1013
    result = chord([add.s(1, 1), become.s(1, "chain"), add.s(3, 3)], identity.s())()
    assert result.get() == [2, 12, 6]
    assert chord([become.s(1, "group"), add.s(1, 1)], identity.s())().get() == [[2, 3], 2]
    failing = (become.s(1, "fail") | add.s(1))()
    with pytest.raises(ReplacementError):
        failing.get()


def test_eager_add_to_chord_is_refused_clearly(rq: Any) -> None:
    said = chord([rq.grow_late.s("x")], rq.identity.s())().get()
    assert said == [
        "ChordMembershipError: grow_late.add_to_chord() is not supported in eager mode "
        "(apply(), app.conf.eager): it needs the chord's row in the database"
    ]
    assert ChordMembershipError.__mro__[1].__name__ == "JobQueueError"
