"""One rule for pausing Python's cyclic garbage collector around a bulk build."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collections inside the block; the collector is left as it was found.

    Loading an export or a job-status document allocates hundreds of thousands of objects that
    hold no cycles, yet every 700 allocations wake the collector, which then walks all of them
    (a quarter of the JSON decoding time, more for a large model). Reference counting still frees
    everything. The collector is only paused, never frozen: gc.freeze() would pin whatever cyclic
    garbage other threads hold at that moment for the life of the process.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
