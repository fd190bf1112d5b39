"""faxbridge.heap: a serving process's start-up objects left out of collections, a wider young generation."""

from __future__ import annotations

import gc

from faxbridge import heap


def test_settle_freezes_what_is_alive_and_widens_the_young_generation() -> None:
    before = gc.get_threshold()
    try:
        kept = [object() for _ in range(10)]          # noqa: F841  (alive when frozen)
        heap.settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (heap.YOUNG, *heap.OLDER)
        cycle: list[object] = []
        cycle.append(cycle)                           # made after: still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
