"""Where a worker's claims stand in the round of fair keys (job_claim_fair).

A worker claims in plain claim order until a claim brings a job with a fair
key (the task's ``fair_key``); from then on it claims with ``job_claim_fair``
until a claim brings no keyed job. That claim visits the keys with waiting
jobs in descending order, those below ``start`` first, then from the top
down to it (why descending: see job_claim_fair). A key of weight w is served
w jobs a round: within one claim by the claim itself, and across claims (a
worker with one free slot claims one job at a time) by staying on the key
until it has had them. Keys are ordered by their UTF-8 bytes, as the
column's "C" collation orders them in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The least string after a key in that order: PostgreSQL's text holds no
#: NUL, so nothing sorts between ``key`` and ``key + NEXT``.
NEXT = "\x01"


class FairTurn:
    """``start``: None while this worker claims in plain order, else where its
    next claim starts: at the greatest key below it ("" for the top)."""

    __slots__ = ("_key", "_served", "start")

    def __init__(self) -> None:
        self.start: str | None = None
        self._key: str | None = None  # the last key served, and how many of its
        self._served = 0  # jobs in a row (its weight's worth ends its turn)

    def claimed(self, jobs: Iterable[tuple[str | None, int | None]]) -> None:
        """Move on from a claim's jobs, given as (fair key, its weight): past
        the last key it served, in the order it visited them, unless that
        key has not had its weight's worth yet."""
        count: dict[str, int] = {}
        weight: dict[str, int] = {}
        for key, key_weight in jobs:
            if key is not None:
                count[key] = count.get(key, 0) + 1
                weight[key] = key_weight or 1
        if not count:
            self.start, self._key, self._served = None, None, 0  # no keyed job due
            return
        start = self.start or ""
        from_top = [key for key in count if key >= start]  # visited after the ones below
        last = min(from_top) if from_top else min(count)
        self._served = (self._served if last == self._key else 0) + count[last]
        self._key = last
        if self._served < weight[last]:
            self.start = last + NEXT  # its turn goes on: the next claim starts at it
        else:
            self.start, self._served = last, 0
