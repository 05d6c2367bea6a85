"""How ``career_relay.serve`` sets up the processes it runs."""

from __future__ import annotations

import gc

from career_relay import serve


def test_the_collector_waits_for_dead_connections_before_its_first_generation() -> None:
    saved = gc.get_threshold()
    found: list[int] = []

    def collected(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            found.append(info["collected"])

    gc.callbacks.append(collected)
    try:
        gc.set_threshold(700, 9, 11)
        serve.tune_collector()
        # The first generation's threshold raised (docs/performance.md, "Every path");
        # the older generations' left as they were.
        assert gc.get_threshold() == (serve.GC_YOUNG_OBJECTS, 9, 11)
        assert serve.GC_YOUNG_OBJECTS > 700
        # Still a collector: a cycle is found once that many more objects are made.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        junk = [[] for _ in range(serve.GC_YOUNG_OBJECTS + 100)]
        assert sum(found) >= 1
        del junk
    finally:
        gc.callbacks.remove(collected)
        gc.set_threshold(*saved)
