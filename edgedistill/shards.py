"""Run a list of jobs in shards across processes, keeping each finished shard on disk.

A shard is named by its content: `shard-<key>.jsonl` (one Sample per line, next to
`shard-<key>.failures.json`), the key a hash of the jobs it holds. Each is written atomically
once done, so a crash or Ctrl-C loses at most the shards in flight, a rerun redoes only the missing
ones, and a plan that changed keeps every shard whose jobs it still holds (a shard of other jobs
can never be mistaken for one of these).

Where the shards run is the caller's choice: by default worker processes on this machine
(`WorkerPool`); inside `shards_run_by(mapper)` the mapper runs them (the Prefect flow maps them as
tasks, which hand them to a `WorkerPool` or run on a Dask cluster). Finished shards come back here
either way, so saving, resuming and progress do not depend on where they ran. A shard that fails
does not stop the others: they finish and are kept, and then the failure is raised.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import queue
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from pydantic import BaseModel

from edgedistill.dataset import Sample, write_atomic
from edgedistill.errors import EdgedistillError

Job = TypeVar("Job")


@dataclass
class ShardOutput:
    samples: list[Sample] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ShardRun:
    outputs: list[ShardOutput]
    ran: list[int]  # shards computed now; the rest were found on disk


RunShard = Callable[[list[Any]], ShardOutput]
ShardMapper = Callable[[RunShard, dict[int, list[Any]]], Iterator[tuple[int, "ShardOutput | Exception"]]]
"""Runs `run_shard` on each shard (index -> jobs) and yields (index, output), or (index, the exception it
raised), as each one finishes."""

_mapper: ContextVar[ShardMapper | None] = ContextVar("shard_mapper", default=None)


@contextlib.contextmanager
def shards_run_by(mapper: ShardMapper) -> Iterator[None]:
    """Within this block every `run_shards` hands its unfinished shards to `mapper`."""
    token = _mapper.set(mapper)
    try:
        yield
    finally:
        _mapper.reset(token)


def shard_key(jobs: Sequence[Any]) -> str:
    """What names a shard: a hash of its jobs (dataclasses and samples by their content)."""
    blob = json.dumps([asdict(job) if is_dataclass(job) else job for job in jobs], sort_keys=True, default=_as_json)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _as_json(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else str(value)  # samples: their content


def shard_path(work_dir: Path, jobs: Sequence[Any]) -> Path:
    return work_dir / f"shard-{shard_key(jobs)}.jsonl"


def _failures_path(samples_path: Path) -> Path:
    return samples_path.with_suffix(".failures.json")


def _load(path: Path) -> ShardOutput | None:
    if not path.exists():
        return None
    samples = [Sample.model_validate_json(line) for line in path.read_text().splitlines() if line]
    failures_file = _failures_path(path)
    failures = json.loads(failures_file.read_text()) if failures_file.exists() else []
    return ShardOutput(samples, failures)


def _save(path: Path, output: ShardOutput) -> None:
    # failures first: the samples file is what marks the shard as done
    write_atomic(_failures_path(path), json.dumps(output.failures).encode())
    write_atomic(path, "".join(s.model_dump_json() + "\n" for s in output.samples).encode())


def run_shards(jobs: Sequence[Job], run_shard: RunShard, work_dir: Path, shard_size: int, workers: int,
               progress: Callable[[int, int], None] | None = None, keep_here: bool = False) -> ShardRun:
    """Run `run_shard` (a picklable top-level function) over shards of `jobs`; outputs in shard order.

    `workers`: processes of the local pool when no task runner is set (`shards_run_by`); 1 runs
    the shards in this process. `keep_here` keeps them in this process even inside
    `shards_run_by` (the diffusion generator keeps its one loaded pipeline here).
    """
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    shards = [list(jobs[i:i + shard_size]) for i in range(0, len(jobs), shard_size)]
    paths = [shard_path(Path(work_dir), shard) for shard in shards]
    outputs: list[ShardOutput | None] = [_load(path) for path in paths]
    todo = [i for i, output in enumerate(outputs) if output is None]
    done = sum(len(shards[i]) for i, output in enumerate(outputs) if output is not None)
    if progress:
        progress(done, len(jobs))

    def finish(index: int, output: ShardOutput) -> None:
        nonlocal done
        _save(paths[index], output)
        outputs[index] = output
        done += len(shards[index])
        if progress:
            progress(done, len(jobs))

    if keep_here:
        mapper = _in_this_process
    else:
        mapper = _mapper.get() or (functools.partial(_in_processes, workers=workers) if workers > 1 and len(todo) > 1
                                   else _in_this_process)
    failed: dict[int, Exception] = {}
    for index, outcome in mapper(run_shard, {index: shards[index] for index in todo}):
        if isinstance(outcome, Exception):
            failed[index] = outcome
        else:
            finish(index, outcome)
    if failed:
        raise _failure(failed, len(todo))
    return ShardRun([output for output in outputs if output is not None], todo)


def _failure(failed: dict[int, Exception], tried: int) -> Exception:
    first = next(iter(failed.values()))
    if not isinstance(first, EdgedistillError):
        return first  # a bug: its own traceback
    return EdgedistillError(f"{len(failed)} of {tried} shards failed; the first: {first.problem}",
                            f"{first.hint + '; ' if first.hint else ''}the {tried - len(failed)} finished shards are "
                            "kept: run the same command again to redo only the failed ones")


def _in_this_process(run_shard: RunShard, shards: dict[int, list[Any]]) -> Iterator[tuple[int, Any]]:
    for index, shard in shards.items():
        try:
            outcome = run_shard(shard)
        except Exception as error:
            outcome = error
        yield index, outcome


def _in_processes(run_shard: RunShard, shards: dict[int, list[Any]], workers: int) -> Iterator[tuple[int, Any]]:
    pool = WorkerPool(min(workers, len(shards)))
    threads = ThreadPoolExecutor(pool.size)
    try:
        pending = {threads.submit(pool.run, run_shard, shard): index for index, shard in shards.items()}
        for future in as_completed(pending):
            yield pending[future], future.exception() or future.result()
    finally:  # done, or Ctrl-C, or the caller stopped: start nothing more, stop the workers
        threads.shutdown(wait=False, cancel_futures=True)
        pool.close()
        threads.shutdown(wait=True)


class WorkerPool:
    """Worker processes, each running one call at a time, that outlive each other. When one dies inside a
    call (killed for its memory, a crash in a native library), that call is tried once more on a new worker
    and then fails with a clear error, and the other calls go on. (A ProcessPoolExecutor breaks as a whole
    when one worker dies, and fails every call in it.) Thread-safe: each thread waits for its own call."""

    ATTEMPTS = 2

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        # spawn, not fork: the caller holds threads (Prefect's) and native libraries that do not fork
        self._context = multiprocessing.get_context("spawn")
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, function: Callable[..., Any], *args: Any) -> Any:
        for attempt in range(1, self.ATTEMPTS + 1):
            worker = self._take()
            try:
                ok, value = worker.call(function, args)
            except _Died as died:
                if self._closed:
                    raise EdgedistillError("stopped before this shard finished") from None
                if attempt == self.ATTEMPTS:
                    raise worker_died(self.ATTEMPTS, str(died)) from None
                continue
            self._idle.put(worker)
            if ok:
                return value
            raise value

    def _take(self) -> "_Worker":
        """An idle worker; a new one while there are fewer than `size` alive; else wait for one."""
        with self._lock:
            if self._closed:
                raise EdgedistillError("stopped before this shard started")
            with contextlib.suppress(queue.Empty):
                return self._idle.get_nowait()
            self._workers = [worker for worker in self._workers if worker.alive]
            if len(self._workers) < self.size:
                self._workers.append(_Worker(self._context))
                return self._workers[-1]
        worker = self._idle.get()
        if worker is None:  # closed while we waited; pass the word on to the next waiting thread
            self._idle.put(None)
            raise EdgedistillError("stopped before this shard started")
        return worker

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for worker in self._workers:
                worker.stop()
        self._idle.put(None)


def worker_died(times: int, how: str) -> EdgedistillError:
    """The error of a shard whose worker process died under it each time it ran (here, or on Dask)."""
    return EdgedistillError(f"a worker process died in the middle of this shard, {times} times ({how})",
                            "a worker killed by SIGKILL has often run out of memory: give the machine more, or use "
                            "fewer workers")


class _Died(Exception):
    pass


class _Worker:
    def __init__(self, context) -> None:
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), name="edgedistill-worker")
        self._process.start()
        child.close()

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def call(self, function: Callable[..., Any], args: tuple) -> tuple[bool, Any]:
        try:
            self._conn.send((function, args))
            multiprocessing.connection.wait([self._conn, self._process.sentinel])
            return self._conn.recv()
        except (EOFError, OSError):
            self._process.join(5)
            code = self._process.exitcode
            raise _Died(f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit code {code}") \
                from None

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._conn.close()


def _serve(conn) -> None:
    """A worker: run calls until the pool (or the process that made it) goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the pool stops us
    while True:
        try:
            function, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            outcome = (True, function(*args))
        except Exception as error:
            outcome = (False, error)
        try:
            conn.send(outcome)
        except Exception as error:  # an answer that does not pickle
            conn.send((False, RuntimeError(f"{type(error).__name__}: {error}")))
