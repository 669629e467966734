"""Give freed heap memory back to the operating system while training data is built.

Building examples allocates large temporaries (rendered frames, the processor's float
``pixel_values``, pickled results from the workers) between the long-lived uint8 patch arrays
that are kept. glibc's malloc serves both from the same heap and, once its mmap threshold has
grown, cannot return the holes the temporaries leave: the process's resident memory grows by
several times the bytes it actually keeps (measured in ``bench/training_data_memory.py``).
``malloc_trim(0)`` releases the free pages of those holes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_heap() -> bool:
    """Return the heap's free pages to the OS; False where the C library has no ``malloc_trim``
    (not glibc), in which case nothing happens."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
