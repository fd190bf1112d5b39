"""The cyclic garbage collector as a long-running process wants it: what start-up made is left out of
every collection, and the young generation is collected less often.

CPython collects the young generation after every 700 net allocations of container objects; a
mail's MIME parse, its PDF check and its job rows make tens of thousands, so a collection ran
dozens of times a message, and each full one walked every object start-up had made (the imports,
the configuration, the pools): 1-2 % of the daemon's CPU a message in ``perf``. :func:`settle`
is called once a process is serving (the daemon after ``daemon.ready``, a worker before its first
job): a full collection, then :func:`gc.freeze` (the objects alive now are never examined again),
and a young generation of :data:`YOUNG` objects. Cycles are still collected, a little later; the
memory that costs is bounded by the threshold (a few MB), not by the load.
"""

from __future__ import annotations

import gc

YOUNG = 20_000          # container allocations before a young collection (CPython's default: 700)
OLDER = (20, 20)        # young collections before a middle one, middle before a full one (default 10, 10)


def settle() -> None:
    """Freeze what is alive now and widen the young generation (see the module docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, *OLDER)
