"""BLAS thread limit of the solver, safe when several threads of one process solve at once.

``threadpoolctl`` limits are process-wide. A plain ``with threadpool_limits(1)`` around each
solve breaks when two threads solve concurrently (a Dask worker with several threads, a
thread pool): the first solver to leave restores the original limit while the other is still
running, so that solve continues with threaded BLAS (slower, and its dot products round
differently, so the same structure no longer gives bit-identical results). Here the first
solver to enter sets the limit and the last to leave lifts it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

_LOCK = threading.Lock()
_USERS = 0
_LIMITER = None


@contextmanager
def one_blas_thread():
    """Limit BLAS to one thread while any solver of this process runs (re-entrant across
    threads: the limit holds from the first entry to the last exit)."""
    global _USERS, _LIMITER
    with _LOCK:
        if _USERS == 0:
            _LIMITER = threadpool_limits(limits=1, user_api="blas")
        _USERS += 1
    try:
        yield
    finally:
        with _LOCK:
            _USERS -= 1
            if _USERS == 0:
                _LIMITER.restore_original_limits()
                _LIMITER = None
