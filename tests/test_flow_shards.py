"""The shards of a stage as Prefect task runs, on the flow's process pool and on a Dask cluster."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from generators.shards import ShardOutput, run_shards, shard_path

FLOW_SCRIPT = """
import json, os, sys
from pathlib import Path
from prefect import flow
from prefect.client.orchestration import get_client
from flows.run import prefect_shard_mapper, task_runner
from generators.shards import ShardOutput, run_shards, shards_run_by

def square_shard(jobs):
    # failure records are free-form: a handy way to bring the worker's process id back
    return ShardOutput(failures=[{"job": job, "square": job * job, "pid": os.getpid()} for job in jobs])

@flow(task_runner=task_runner(None if sys.argv[2] == "processes" else sys.argv[2]))
def squares(work):
    with shards_run_by(prefect_shard_mapper("squares")):
        return run_shards(list(range(10)), square_shard, Path(work), shard_size=3, workers=2)

run = squares(sys.argv[1])
with get_client(sync_client=True) as client:
    task_runs = [(r.name.rsplit("-", 1)[0], r.state_type.value) for r in client.read_task_runs()]
records = [record for output in run.outputs for record in output.failures]
print(json.dumps({"records": records, "ran": run.ran, "task_runs": task_runs, "flow_pid": os.getpid()}))
"""


@pytest.mark.parametrize("runner", ["processes", "local"])
def test_shards_run_as_prefect_tasks_elsewhere_and_are_kept_here(tmp_path, runner):
    work = tmp_path / "work"
    env = os.environ | {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-c", FLOW_SCRIPT, str(work), runner], env=env, capture_output=True,
                          text=True, timeout=600, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert [record["square"] for record in result["records"]] == [job * job for job in range(10)]
    assert result["flow_pid"] not in {record["pid"] for record in result["records"]}  # ran in workers
    assert result["ran"] == [0, 1, 2, 3]
    assert sorted(result["task_runs"]) == [["squares-shard", "COMPLETED"]] * 4
    # the shards were saved by the flow, so a run without Prefect finds them all and computes nothing
    assert all(shard_path(work, index).exists() for index in range(4))
    again = run_shards(list(range(10)), _never_called, work, shard_size=3, workers=2)
    assert again.ran == [] and len(again.outputs) == 4


def _never_called(jobs):
    raise AssertionError("every shard was on disk")


def _square_shard(jobs):
    return ShardOutput(failures=[{"square": job * job} for job in jobs])


def test_shards_cut_another_way_are_not_mistaken_for_this_cut(tmp_path):
    run_shards(list(range(10)), _square_shard, tmp_path, shard_size=3, workers=1)
    recut = run_shards(list(range(10)), _square_shard, tmp_path, shard_size=4, workers=1)
    assert recut.ran == [0, 1, 2]  # shard 0 of the old cut held jobs 0-2, of this one jobs 0-3
    assert [record["square"] for output in recut.outputs for record in output.failures] == [j * j for j in range(10)]
    assert not shard_path(tmp_path, 3).exists()
