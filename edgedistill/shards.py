"""Run a list of jobs in shards across processes, keeping each finished shard on disk.

A shard is named by its content: `shard-<key>.jsonl` (one Sample per line, next to
`shard-<key>.failures.json`), the key a hash of the jobs it holds. Each is written atomically
once done, so a crash or Ctrl-C loses at most the shards in flight, a rerun redoes only the missing
ones, and a plan that changed keeps every shard whose jobs it still holds (a shard of other jobs
can never be mistaken for one of these).

Where the shards run is the caller's choice: by default a process pool on this machine; inside
`shards_run_by(mapper)` the mapper runs them (the Prefect flow maps them as tasks onto its task
runner: a local process pool, or a Dask cluster). Finished shards come back here either way, so
saving, resuming and progress do not depend on where they ran.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from pydantic import BaseModel

from edgedistill.dataset import Sample, write_atomic

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
ShardMapper = Callable[[RunShard, dict[int, list[Any]]], Iterator[tuple[int, ShardOutput]]]
"""Runs `run_shard` on each shard (index -> jobs) and yields (index, output) as each one finishes."""

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
    for index, output in mapper(run_shard, {index: shards[index] for index in todo}):
        finish(index, output)
    return ShardRun([output for output in outputs if output is not None], todo)


def _in_this_process(run_shard: RunShard, shards: dict[int, list[Any]]) -> Iterator[tuple[int, ShardOutput]]:
    for index, shard in shards.items():
        yield index, run_shard(shard)


def _in_processes(run_shard: RunShard, shards: dict[int, list[Any]],
                  workers: int) -> Iterator[tuple[int, ShardOutput]]:
    # spawn, not fork: the caller may hold threads (Prefect) or native libraries that do not fork
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(shards)), mp_context=context) as pool:
        pending: dict[Future, int] = {pool.submit(run_shard, shard): index for index, shard in shards.items()}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield pending.pop(future), future.result()
        except BaseException:  # Ctrl-C, a failed shard, or the caller stopped: start nothing more
            for future in pending:
                future.cancel()
            raise
