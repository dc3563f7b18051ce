"""The process's C heap (glibc's malloc), set up for a server that many short-lived threads use at once.

glibc gives every thread that allocates a heap of its own (an arena), and a class's burst of requests runs on
dozens of web-handler threads that come and go. Two things follow, both measured with
`python -m benchmarks.bench_class` on the 2-core machine:

- A heap keeps the free memory at its top resident up to malloc's trim threshold, and glibc raises that
  threshold to twice the largest block freed: torch's tensors pushed it to 40-51 MB, so each handler thread's
  heap could keep that much after its thread was gone. With the thresholds left to glibc, the app's memory
  settled 40-103 MB above its start after the class benchmark (seven runs, two over its 100 MB bar); with
  these, 46-71 MB (five runs).
- Blocks above malloc's mmap threshold (glibc raises it as blocks are freed, to 20-26 MB here) are mapped
  afresh for every tensor, and their pages faulted in every time: 150-260 thousand page faults while the
  network server alone ran 30 grids (counted with getrusage around `NetworkServer.run`), 2-27 thousand with
  blocks up to 32 MB coming from the heaps. The benchmark's compute floor for 30 grids went from 2.2-2.4 s
  to 2.0-2.2 s.

On other systems (macOS, Windows, musl) these functions do nothing.
"""
from __future__ import annotations

import ctypes
import platform

MMAP_THRESHOLD_BYTES = 32 << 20  # smaller blocks come from the heaps (the most glibc allows, its own maximum)
TRIM_THRESHOLD_BYTES = 16 << 20  # free memory at a heap's top beyond this goes back to the system
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>


def glibc() -> ctypes.CDLL | None:
    """The C library, if it is glibc (whose malloc these settings are for), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL("libc.so.6")


def fix_malloc_thresholds() -> None:
    """Fix glibc's mmap and trim thresholds (MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES) for the whole
    process, instead of letting them grow with the largest block freed. Idempotent."""
    libc = glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def release_free_memory() -> None:
    """Return the free pages inside the heaps to the operating system (glibc's malloc_trim). Many threads
    allocating at once leave freed memory in their heaps, which would otherwise keep a Space's resident
    memory at the high-water mark of its busiest minute."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)
