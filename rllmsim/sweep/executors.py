"""Where runs execute: in this process, on a local process pool, or on a Ray cluster.

Every executor has one method, `imap_unordered(fn, items)`, yielding `(index, result)` pairs as
runs finish, in whatever order they finish; `result` is what `fn(items[index])` returned, or the
exception a task died with (a worker killed for memory, a lost Ray node). `fn` must be a
top-level function of plain data so it can be shipped. The same function and inputs give the same
results on every executor: runs are seeded from their configs, never from where they run.

Stopping early (Ctrl-C, or the caller leaving the loop) cancels what has not started.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

from rllmsim.errors import ConfigError

Result = tuple[int, Any]


class Executor(Protocol):
    name: str

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Result]:
        ...

    def start(self, module: str) -> None:
        """Get workers ready to run functions of `module` while the caller prepares their tasks."""
        ...

    def close(self) -> None:
        ...


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: a worker gets SIGKILL when its parent dies (Linux parent-death signal),
    so a killed sweep or plan does not leave workers running queued runs."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


class InlineExecutor:
    """Runs in this process, one at a time: for one worker, debugging and notebooks."""

    name = "inline"

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Result]:
        for index, item in enumerate(items):
            try:
                result = fn(item)
            except Exception as err:  # noqa: BLE001 - reported like a lost worker
                result = err
            yield index, result

    def start(self, module: str) -> None:
        pass

    def close(self) -> None:
        pass


class LocalExecutor:
    """A pool of `workers` processes (spawned, so nothing of the parent's state leaks in), started
    on the first call and kept until `close()`: a plan's two waves share it, and its workers'
    cost-model caches."""

    name = "local"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def start(self, module: str) -> None:
        """Spawn every worker now, each importing `module` (a second or two of imports that
        then overlaps the caller's own work)."""
        pool = self._started()
        for _ in range(self.workers):
            pool.submit(importlib.import_module, module)

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=die_with_parent, initargs=(os.getpid(),))
        return self._pool

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Result]:
        if not items:
            return
        pool = self._started()
        pending = {pool.submit(fn, item): index for index, item in enumerate(items)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    error = future.exception()
                    if isinstance(error, BrokenProcessPool):
                        self.close()
                        raise RuntimeError("a worker process died (out of memory?); finished runs are saved, "
                                           "re-run the same command to resume") from error
                    yield index, error if error is not None else future.result()
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor:
    """Ray tasks, one CPU each. `address=None` starts a local instance with `num_cpus` CPUs;
    an address ("auto", "ray://head:10001") joins a running cluster, shipping this package's
    source to its workers (they still need its dependencies installed)."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray: pip install 'rllmsim[ray]'") from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            if address:
                package = str(Path(__file__).resolve().parents[1])
                ray.init(address=address, runtime_env={"py_modules": [package]}, log_to_driver=False)
            else:
                # "local": always a new instance, never a stale cluster found in /tmp/ray
                ray.init(address="local", num_cpus=num_cpus or default_workers(), include_dashboard=False,
                         log_to_driver=False)

    def imap_unordered(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Result]:
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=1)(fn)
        pending = {remote.remote(item): index for index, item in enumerate(items)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - a lost worker or node
                        result = err
                    yield index, result
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def start(self, module: str) -> None:
        pass  # Ray starts its workers with the instance

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(workers: int | None = None, ray: bool = False, ray_address: str | None = None) -> Executor:
    if ray or ray_address:
        return RayExecutor(address=ray_address, num_cpus=workers)
    workers = workers or default_workers()
    return InlineExecutor() if workers == 1 else LocalExecutor(workers)
