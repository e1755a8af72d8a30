"""OpenMP's wait policy for a machine shared with other work, set by the command line before torch loads.

torch's CPU kernels run on OpenMP (the pip wheels link GNU's libgomp; ``torch.__config__.parallel_info()`` says so)
with one intra-op thread per core. Between two parallel regions libgomp's threads *spin* for about 300 000 turns
(~3 ms) before they sleep, so that the next region starts without a wake-up. Alone that is the fastest choice: a
demo step is hundreds of small regions. Beside another busy process it is the slowest: each process's idle threads
burn the cores the other needs: two trainings on two cores took 6.85x their time alone where a fair share is ~2x.
``OMP_WAIT_POLICY=PASSIVE`` (no spinning) shares fairly but costs 1.4x alone (every region pays a futex wake-up).

A short spin keeps most of both: ``GOMP_SPINCOUNT=1000`` (a few microseconds) covers the gap between back-to-back
kernels and then yields the core. Measured with ``mmcaps bench contention --steps 40`` (demo preset, 2 torch threads
a process, libgomp; AMD EPYC Zen 4, 2 cores, AVX512, load ~2 from the bench's own processes), 40 steps alone and
each of two processes beside the other:

    setting                          alone    beside (each)   beside / alone
    runtime default                  6.75 s   46.2 s          6.85x
    GOMP_SPINCOUNT=10000             6.53 s   36.1 s          5.53x
    GOMP_SPINCOUNT=1000 (ours)       6.60 s   14.0 s          2.12x
    GOMP_SPINCOUNT=100               9.39 s   12.0 s          1.28x
    OMP_WAIT_POLICY=PASSIVE          9.57 s   11.9 s          1.24x

so 1000 is as fast as the default alone and shares the cores fairly (about 2x) beside another process; shorter
spins pay the wake-ups alone (1.4x). Intel's OpenMP (``KMP_BLOCKTIME`` in ms; some other torch builds) gets 0, not
measured here (the pip wheels link libgomp). The number of threads stays torch's choice (the cores), so features
stay byte-identical at a given thread count: the wait policy changes when a thread sleeps, not what it computes. A
value the user set in the environment wins.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from typing import Any

# The settings `mmcaps` starts with (measured by `mmcaps bench contention`: the table above).
SHARED_MACHINE_DEFAULTS: dict[str, str] = {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "0"}
# Any of these set by the user means they chose a policy: we set none of ours.
OPENMP_WAIT_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def apply_thread_settings(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Put :data:`SHARED_MACHINE_DEFAULTS` in ``environ`` (default ``os.environ``) unless it names a wait policy
    already; returns what was set ({} when the user's choice stands).

    Must run before torch is imported: libgomp reads its environment once, when it is loaded.
    """
    env = os.environ if environ is None else environ
    if any(key in env for key in OPENMP_WAIT_KEYS):
        return {}
    env.update(SHARED_MACHINE_DEFAULTS)
    return dict(SHARED_MACHINE_DEFAULTS)


def without_thread_settings(environ: MutableMapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` without any OpenMP wait setting: the runtime's own defaults (for comparisons)."""
    return {k: v for k, v in environ.items() if k not in OPENMP_WAIT_KEYS}


def openmp_library() -> str:
    """The OpenMP runtime loaded in this process (``libgomp``, ``libiomp5``, ``libomp``), from its memory map."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            maps = fh.read()
    except OSError:  # not Linux: torch's own words
        import torch  # noqa: PLC0415  deferred: torch

        info = torch.__config__.parallel_info()
        return "OpenMP" if "OpenMP" in info else "unknown"
    found = sorted(set(re.findall(r"(libgomp|libiomp5|libomp)[-.\w]*\.so", maps)))
    return ", ".join(found) or "none loaded"


def thread_settings() -> dict[str, Any]:
    """What a run records: torch's intra-op threads and the OpenMP wait settings in effect (``None``: unset)."""
    import torch  # noqa: PLC0415  deferred: torch

    return {"torch_threads": torch.get_num_threads(), **{k: os.environ.get(k) for k in OPENMP_WAIT_KEYS}}
