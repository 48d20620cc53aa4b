"""Keep a process's start-up heap out of the garbage collector's way."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move every object alive now (modules, the app, SDK clients, models) to the
    permanent generation: the cyclic collector's full passes then walk only what
    requests and jobs create, not the hundreds of thousands of start-up objects that
    never die. Call once, when start-up is over."""
    gc.collect()
    gc.freeze()
