"""Believed data made into events (jobqueue/events/data.py): the fast paths,
which make a payload's lines with C loops, against what each event must say."""

from __future__ import annotations

import json

from jobqueue.events.data import C_BODY, S_BODY, Believed
from jobqueue.events.hints import Data, Hint, parse_data

WORKER = "0b6c9d1e-1111-4222-8333-944445555666"
IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(4)]
ROOT = "11111111-2222-4333-8444-555566667777"


def _claim(*items: str, at: str = "1700000000.5") -> Data:
    return parse_data(f"\x1dS\x1f{WORKER}\x1f{at}\x1e" + "\x1e".join(items), 4242)


def _done(*items: str, at: str = "1700000001.25") -> Data:
    return parse_data(f"\x1dC\x1f{WORKER}\x1f{at}\x1e" + "\x1e".join(items), 4242)


def _s(job: str, retries: int, task: str, queue: str, root: str = "", parent: str = "") -> str:
    return "\x1f".join([job, str(retries), task, queue, root, parent])


def _c(job: str, retries: int, runtime: str, result: str) -> str:
    return "\x1f".join([job, str(retries), runtime, result])


def test_a_claim_makes_each_jobs_received_then_started_event() -> None:
    data = _claim(_s(IDS[0], 0, "t.a", "q1"), _s(IDS[1], 2, "t.b", "q2", ROOT, IDS[0]))
    assert S_BODY.fullmatch(data.body)
    lines: list[str] = []
    Believed().started_lines(data, '"host-1"', None, lines)
    events = [json.loads(line) for line in lines]
    shared = {"hostname": "host-1", "worker_id": WORKER, "timestamp": 1700000000.5}
    assert events == [
        {"type": "task-received", "uuid": IDS[0], "name": "t.a", "queue": "q1", "retries": 0,
         "root_id": None, "parent_id": None, **shared},
        {"type": "task-started", "uuid": IDS[0], "name": "t.a", "queue": "q1", "retries": 0,
         **shared},
        {"type": "task-received", "uuid": IDS[1], "name": "t.b", "queue": "q2", "retries": 2,
         "root_id": ROOT, "parent_id": IDS[0], **shared},
        {"type": "task-started", "uuid": IDS[1], "name": "t.b", "queue": "q2", "retries": 2,
         **shared},
    ]  # fmt: skip


def test_only_the_wanted_types_are_made() -> None:
    lines: list[str] = []
    believed = Believed()
    data = _claim(_s(IDS[0], 0, "t.a", "q"), _s(IDS[1], 0, "t.a", "q"))
    believed.started_lines(data, "null", frozenset({"task-started"}), lines)
    assert [json.loads(line)["type"] for line in lines] == ["task-started"] * 2
    believed.started_lines(_claim(_s(IDS[2], 0, "t.a", "q")), "null", frozenset(), lines)
    assert len(lines) == 2
    # Claims are kept even when none of their events is wanted: a success needs them.
    assert set(believed.running) == set(IDS[:3])
    done = _done(_c(IDS[2], 0, "0.5", "1"))
    assert believed.succeeded_lines(done, "null", frozenset({"task-started"})) == []
    assert IDS[2] not in believed.running


def test_a_success_takes_its_task_and_queue_from_the_claim() -> None:
    believed = Believed()
    believed.started_lines(
        _claim(_s(IDS[0], 0, "t.a", "q1"), _s(IDS[1], 1, "t.b", "q2")), "null", None, []
    )
    done = _done(_c(IDS[1], 1, "0.002", '{"a": "x\\"y"}'), _c(IDS[0], 0, "1e-05", "null"))
    assert C_BODY.fullmatch(done.body)
    out = believed.succeeded_lines(done, '"h"', None)
    assert [json.loads(line) for line in out if isinstance(line, str)] == [
        {"type": "task-succeeded", "uuid": IDS[1], "name": "t.b", "queue": "q2",
         "hostname": "h", "worker_id": WORKER, "retries": 1, "timestamp": 1700000001.25,
         "runtime": 0.002, "result": '{"a": "x\\"y"}'},
        {"type": "task-succeeded", "uuid": IDS[0], "name": "t.a", "queue": "q1",
         "hostname": "h", "worker_id": WORKER, "retries": 0, "timestamp": 1700000001.25,
         "runtime": 1e-05, "result": "null"},
    ]  # fmt: skip
    assert believed.running == {}


def test_a_success_whose_claim_was_not_seen_is_a_hint_and_the_rest_still_lines() -> None:
    believed = Believed()
    # A name that needs escaping came item by item (Believed.items): kept raw.
    believed.running[IDS[0]] = ('t."quoted"', "quéue")
    out = believed.succeeded_lines(
        _done(_c(IDS[0], 0, "0.1", "2"), _c(IDS[3], 4, "0.1", "3")), "null", None
    )
    assert out[1] == Hint("succeeded", IDS[3], 5)
    assert isinstance(out[0], str)
    event = json.loads(out[0])
    assert (event["name"], event["queue"], event["result"]) == ('t."quoted"', "quéue", "2")


def test_names_kept_item_by_item_are_escaped_on_the_fast_path_too() -> None:
    believed = Believed()
    believed.running[IDS[0]] = ('t."quoted"', "quéue")
    (line,) = believed.succeeded_lines(_done(_c(IDS[0], 0, "0.1", "2")), "null", None)
    assert isinstance(line, str)
    assert json.loads(line)["name"] == 't."quoted"'


def test_a_result_cut_short_says_so() -> None:
    believed = Believed()
    believed.started_lines(
        _claim(_s(IDS[0], 0, "t", "q"), _s(IDS[1], 0, "t", "q")), "null", None, []
    )
    long = '"' + "x" * 199 + "y"  # 201 characters: the statement cut it
    out = believed.succeeded_lines(
        _done(_c(IDS[0], 0, "1", long), _c(IDS[1], 0, "1", "7")), "null", None
    )
    first, second = (json.loads(line) for line in out if isinstance(line, str))
    assert first["result"] == long[:200] + "…"
    assert second["result"] == "7"
