"""Opt-in memory probe for bench runs: put this directory on ``PYTHONPATH`` and set
``SLUICE_BENCH_MEMDUMP=DIR``; every Celery worker node (the first and its siblings) then traces
allocations (``SLUICE_BENCH_MEMDUMP_FRAMES``, 25) and, every ``SLUICE_BENCH_MEMDUMP_EVERY``
seconds (60; prefork children too), appends to ``DIR/PID.jsonl`` its RSS, the bytes tracemalloc
traces, glibc's
mallinfo2 (in use / free in the heap), the object count and the commonest types, and dumps a
tracemalloc snapshot to ``DIR/PID-N.snap``. Why: RSS alone cannot tell a Python-level leak
(traced bytes grow) from allocator fragmentation (RSS grows, traced bytes and heap in use do
not). Nothing happens without the variable, and only worker processes are probed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

_DIR = os.environ.get("SLUICE_BENCH_MEMDUMP")


def _probe(out: str) -> None:
    import collections
    import ctypes
    import gc
    import json
    import threading
    import time
    import tracemalloc

    frames = int(os.environ.get("SLUICE_BENCH_MEMDUMP_FRAMES", "25"))  # 0: no tracing
    if frames:
        tracemalloc.start(frames)
    every = float(os.environ.get("SLUICE_BENCH_MEMDUMP_EVERY", "60"))

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = Mallinfo2
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        libc = None

    def rss_mb() -> float:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def loop() -> None:
        os.makedirs(out, exist_ok=True)
        pid, t0, n = os.getpid(), time.monotonic(), 0
        while True:
            time.sleep(every)
            n += 1
            row: dict[str, object] = {
                "n": n, "t": round(time.monotonic() - t0), "pid": pid,
                "sibling": os.environ.get("SLUICE_WORKER_SIBLING", ""),
                "threads": threading.active_count(), "rss_mb": rss_mb(),
                "traced_mb": tracemalloc.get_traced_memory()[0] / 2**20,
                "pyblocks": sys.getallocatedblocks()}
            if libc is not None:
                mi = libc.mallinfo2()
                row.update(heap_mb=mi.arena / 2**20, inuse_mb=mi.uordblks / 2**20,
                           free_mb=mi.fordblks / 2**20, mmap_mb=mi.hblkhd / 2**20)
                xml = os.path.join(out, f"{pid}-{n}.malloc.xml")  # per arena
                fp = libc.fopen(xml.encode(), b"w")
                if fp:
                    libc.malloc_info(0, fp)
                    libc.fclose(fp)
            row["gc_stats"] = gc.get_stats()
            row["gc_count"] = gc.get_count()
            row["gc_threshold"] = gc.get_threshold()
            row["frozen"] = gc.get_freeze_count()
            objs = gc.get_objects()
            row["objects"] = len(objs)
            row["types"] = collections.Counter(type(o).__name__ for o in objs).most_common(40)
            del objs
            with open(os.path.join(out, f"{pid}.jsonl"), "a") as f:
                f.write(json.dumps(row) + "\n")
            if frames:
                tracemalloc.take_snapshot().dump(os.path.join(out, f"{pid}-{n}.snap"))
            if n % int(os.environ.get("SLUICE_BENCH_MEMDUMP_COLLECT") or 10**9) == 0:
                _collect(out, pid, n, rss_mb)

    threading.Thread(target=loop, name="sluice-memdump", daemon=True).start()


def _collect(out: str, pid: int, n: int, rss_mb: Callable[[], float]) -> None:
    """A full collection now (every COLLECT dumps): what it frees, and with
    SLUICE_BENCH_MEMDUMP_GARBAGE what it found."""
    import gc
    import json
    import tracemalloc

    saveall = bool(os.environ.get("SLUICE_BENCH_MEMDUMP_GARBAGE"))
    if saveall:  # what the collection found, kept for a look, then dropped
        gc.set_debug(gc.DEBUG_SAVEALL)
    found = gc.collect()
    if saveall:
        gc.set_debug(0)
        garbage, gc.garbage[:] = list(gc.garbage), []
        with open(os.path.join(out, f"{pid}.garbage.json"), "a") as f:
            f.write(json.dumps({"n": n, **_summary(garbage)}) + "\n")
        del garbage
    after = {"collected": found, "rss_mb": rss_mb(),
             "traced_mb": tracemalloc.get_traced_memory()[0] / 2**20,
             "pyblocks": sys.getallocatedblocks()}
    with open(os.path.join(out, f"{pid}.jsonl"), "a") as f:
        f.write(json.dumps({"n": n, "after_collect": after}) + "\n")


def _summary(garbage: list[object]) -> dict[str, object]:
    """What a collection found: its objects by type (count, shallow bytes), the functions of
    its frames, its exceptions."""
    import collections

    kinds = collections.Counter(type(o).__name__ for o in garbage)
    sizes: collections.Counter[str] = collections.Counter()
    for o in garbage:
        sizes[type(o).__name__] += sys.getsizeof(o)
    where = collections.Counter(f"{o.f_code.co_filename}:{o.f_code.co_name}"  # type: ignore[attr-defined]
                                for o in garbage if type(o).__name__ == "frame")
    excs = collections.Counter(type(o).__name__ for o in garbage
                               if issubclass(type(o), BaseException))
    return {"kinds": kinds.most_common(30), "bytes": sizes.most_common(30),
            "frames": where.most_common(40), "exceptions": excs.most_common(20)}


if _DIR and "celery" in sys.argv[0] + " ".join(sys.orig_argv) and "worker" in sys.orig_argv:
    _probe(_DIR)
    # A prefork child has no thread of its parent's: it starts a probe of its own.
    os.register_at_fork(after_in_child=lambda: _probe(_DIR))  # type: ignore[arg-type]
