"""The process's C heap (diffusion/heap.py): with malloc's thresholds fixed, a thread's freed heap goes back
to the system, as a class's many handler threads need; the network server fixes them."""
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion.heap import glibc
from diffusion.server import NetworkServer

# One handler thread's life in a class: 30 MB in 100 kB blocks from its own heap, then all freed. Prints the
# resident memory it added at its peak and after the frees, in MB.
A_THREAD_S_HEAP = """
import sys, threading, time
from diffusion import heap
if sys.argv[1] == "fixed":
    heap.fix_malloc_thresholds()

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

big = b"x" * (20 << 20); del big  # as torch's tensors do: a big block freed, and glibc raises its thresholds
blocks, state = [None] * 300, [0]

def wait_for(s):  # allocates nothing, so nothing of the thread's lies above its blocks in its heap
    while state[0] != s:
        time.sleep(0.001)

def handler_thread():
    for i in range(len(blocks)):
        blocks[i] = b"x" * 100_000
    state[0] = 1; wait_for(2)
    for i in reversed(range(len(blocks))):
        blocks[i] = None
    state[0] = 3; wait_for(4)

thread = threading.Thread(target=handler_thread)
before = rss_mb(); thread.start()
wait_for(1); peak = rss_mb(); state[0] = 2
wait_for(3); after = rss_mb(); state[0] = 4; thread.join()
print(peak - before, after - before)
"""


def added_mb(thresholds: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", A_THREAD_S_HEAP, thresholds], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, timeout=120, check=True).stdout
    return [float(v) for v in out.split()]


@pytest.mark.skipif(glibc() is None, reason="glibc's malloc")
def test_with_fixed_thresholds_a_thread_s_freed_heap_goes_back_to_the_system():
    peak, kept = added_mb("glibc's own")
    assert peak > 28 and kept > 28  # the control: glibc's grown trim threshold keeps all 30 MB resident
    peak, kept = added_mb("fixed")
    assert peak > 28 and kept < 16.5  # at most TRIM_THRESHOLD_BYTES stays


def test_the_network_server_fixes_the_thresholds(tiny_random_pipe, monkeypatch):
    import diffusion.server

    calls = []
    monkeypatch.setattr(diffusion.server, "fix_malloc_thresholds", lambda: calls.append(1))
    NetworkServer(tiny_random_pipe.model, tiny_random_pipe.schedule).close()
    assert calls == [1]
