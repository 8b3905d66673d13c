"""Connecting to a Dask cluster, or starting a local one, for `detect_many(client=...)`.

Dask is an optional extra (``pip install "patternfind[dask]"``); nothing here
is imported unless a cluster is asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from patternfind._validation import positive_int
from patternfind.batch.engine import available_cores

__all__ = ["DASK_MISSING", "dask_client"]

DASK_MISSING = 'Dask is not installed: pip install "patternfind[dask]"'


@contextlib.contextmanager
def dask_client(scheduler: str, *, workers: int | None = None,
                timeout: float = 10.0) -> Iterator[Any]:
    """A `distributed.Client` for ``scheduler``, closed when the block ends.

    Parameters
    ----------
    scheduler : str
        A scheduler address such as ``"tcp://scheduler.example:8786"``, or
        ``"local"`` to start a `distributed.LocalCluster` of worker processes
        on this machine for the duration of the block.
    workers : int, optional
        Worker processes of a local cluster (default: every core), one thread each.
    timeout : float
        Seconds to wait for a remote scheduler to answer.

    Raises
    ------
    ImportError
        If Dask is not installed (the message says how to install it).
    ValueError
        If the scheduler does not answer within ``timeout``.
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise ImportError(DASK_MISSING) from None
    if scheduler == "local":
        count = available_cores() if workers is None else positive_int(workers, "workers")
        # Dask workers set MALLOC_TRIM_THRESHOLD_ by default, which made detect()
        # about 2x slower per image here (PERFORMANCE.md); the profiler costs time too.
        settings = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                    "distributed.worker.profile.enabled": False}
        with dask.config.set(settings), LocalCluster(
                n_workers=count, threads_per_worker=1, processes=True,
                dashboard_address=":0") as cluster, Client(cluster) as client:
            yield client
        return
    try:
        client = Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as error:
        msg = f"no Dask scheduler answered at {scheduler} within {timeout:g} s ({error})"
        raise ValueError(msg) from None
    with client:
        yield client
