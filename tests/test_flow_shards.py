"""The shards of a stage as Prefect task runs, on the flow's process pool and on a Dask cluster."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgedistill.shards import ShardOutput, run_shards, shard_path

FLOW_SCRIPT = """
import json, os, sys
from pathlib import Path
from prefect import flow
from prefect.client.orchestration import get_client
from flows.run import prefect_shard_mapper, task_runner
from edgedistill.shards import WorkerPool, run_shards, shards_run_by
from tests.test_flow_shards import square_shard_with_pid

@flow(task_runner=task_runner(None if sys.argv[2] == "processes" else sys.argv[2]))
def squares(work):
    with WorkerPool(2) as pool, shards_run_by(prefect_shard_mapper("squares", pool if sys.argv[2] == "processes" else None)):
        return run_shards(list(range(10)), square_shard_with_pid, Path(work), shard_size=3, workers=2)

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
    assert all(shard_path(work, list(range(10))[i:i + 3]).exists() for i in range(0, 10, 3))
    again = run_shards(list(range(10)), _never_called, work, shard_size=3, workers=2)
    assert again.ran == [] and len(again.outputs) == 4


def square_shard_with_pid(jobs):
    # failure records are free-form: a handy way to bring the worker's process id back
    return ShardOutput(failures=[{"job": job, "square": job * job, "pid": os.getpid()} for job in jobs])


def _never_called(jobs):
    raise AssertionError("every shard was on disk")


def _square_shard(jobs):
    return ShardOutput(failures=[{"square": job * job} for job in jobs])


def test_a_shard_is_kept_while_the_plan_still_holds_its_jobs_and_never_mistaken_for_another(tmp_path):
    run_shards(list(range(10)), _square_shard, tmp_path, shard_size=3, workers=1)
    changed = [0, 1, 2, 3, 40, 5, 6, 7, 8, 9]  # only the second shard holds other jobs now
    rerun = run_shards(changed, _square_shard, tmp_path, shard_size=3, workers=1)
    assert rerun.ran == [1]
    assert [record["square"] for output in rerun.outputs for record in output.failures] == [j * j for j in changed]
    # cut another way, no shard holds the same jobs: shard 0 of the old cut held jobs 0-2, of this one 0-3
    recut = run_shards(list(range(10)), _square_shard, tmp_path, shard_size=4, workers=1)
    assert recut.ran == [0, 1, 2]
    assert [record["square"] for output in recut.outputs for record in output.failures] == [j * j for j in range(10)]


LABEL_SCRIPT = """
import json, sys
from prefect import flow
from prefect.client.orchestration import get_client
from edgedistill.dataset import Dataset
from edgedistill.labelling import run_labeler
from edgedistill.recipe import AutoLabelSettings, DetectionClass
from edgedistill.shards import shards_run_by
from flows.run import prefect_shard_mapper, task_runner
from labelers.owl import OwlLabeler

location, work, model = sys.argv[1:4]
ontology = {"disc": DetectionClass(prompts=["disc", "ball"])}

@flow(task_runner=task_runner("local"))
def label():
    dataset = Dataset.open(location)
    labeler = OwlLabeler(ontology, AutoLabelSettings(model=model, threshold=0.0, batch_size=2))
    labeler.shard_size = 2
    with shards_run_by(prefect_shard_mapper("label")):
        return run_labeler(labeler, dataset, dataset.samples(dataset.info.versions[-1].id), work).samples

samples = label()
with get_client(sync_client=True) as client:
    task_runs = [(r.name.rsplit("-", 1)[0], r.state_type.value) for r in client.read_task_runs()]
print(json.dumps({"samples": [s.model_dump(mode="json") for s in samples], "task_runs": task_runs}))
"""


@pytest.mark.slow
def test_labelling_shards_run_on_a_local_dask_cluster(tmp_path):
    """OWL labels the same boxes as shards on a Dask cluster (a Prefect flow) as in this process."""
    import numpy as np

    from edgedistill.dataset import Dataset, ImageShape, MediaPolicy, OntologyClass, Provenance, Sample
    from edgedistill.images import image_bytes
    from edgedistill.labelling import run_labeler
    from edgedistill.recipe import AutoLabelSettings, DetectionClass
    from labelers.owl import OwlLabeler
    from tiny_models import save_tiny_owl

    model = str(save_tiny_owl(tmp_path / "owl"))
    dataset = Dataset.create(tmp_path / "ds", "discs", "detection", [OntologyClass(name="disc", prompts=["disc", "ball"])],
                             MediaPolicy(image_size=(64, 48)))
    rng = np.random.default_rng(0)
    samples = []
    for seed in range(5):
        digest, media = dataset.add_media(image_bytes(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), "PNG"), "png")
        samples.append(Sample(id=digest[:16], media=media, kind="image", shape=ImageShape(width=64, height=48),
                              provenance=Provenance(source="test", seed=seed)))
    dataset.commit(samples, None, "sources", {})
    env = os.environ | {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-c", LABEL_SCRIPT, str(tmp_path / "ds"), str(tmp_path / "work"), model],
                          env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(result["task_runs"]) == [["label-shard", "COMPLETED"]] * 3  # 5 images in shards of 2
    here = run_labeler(OwlLabeler({"disc": DetectionClass(prompts=["disc", "ball"])},
                                  AutoLabelSettings(model=model, threshold=0.0, batch_size=2)),
                       dataset, samples, tmp_path / "here").samples
    on_dask = [Sample.model_validate(item) for item in result["samples"]]
    assert [s.id for s in on_dask] == [s.id for s in samples]
    assert sum(len(s.labels) for s in here) > 0
    for a, b in zip(here, on_dask):
        assert [x.class_name for x in a.labels] == [x.class_name for x in b.labels]
        assert np.allclose([x.box for x in a.labels], [x.box for x in b.labels], atol=0.05)
        assert np.allclose([x.score for x in a.labels], [x.score for x in b.labels], atol=1e-4)


DYING_SCRIPT = """
import json, sys
from pathlib import Path
from prefect import flow
from edgedistill.errors import EdgedistillError
from edgedistill.shards import run_shards, shards_run_by
from flows.run import one_prefect_server, prefect_shard_mapper, task_runner
from tests.dying_shards import shard_that_dies_on_4_and_7

@flow(task_runner=task_runner("local"))
def squares(work):
    with shards_run_by(prefect_shard_mapper("squares")):
        return run_shards(list(range(12)), shard_that_dies_on_4_and_7, Path(work), shard_size=3, workers=2)

try:
    with one_prefect_server():
        squares(sys.argv[1])
except EdgedistillError as error:
    print(json.dumps({"problem": error.problem, "hint": error.hint}))
"""


def test_a_dask_worker_that_dies_fails_only_its_shard_and_the_rerun_does_only_that_one(tmp_path):
    """As with the process pool (tests/test_faults.py): a shard whose worker dies each time is tried on two
    workers, then fails with our error, not Dask's KilledWorker; the other shards finish and are kept."""
    from tests.dying_shards import shard_that_squares

    work = tmp_path / "work"
    env = os.environ | {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-c", DYING_SCRIPT, str(work)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=Path(__file__).parents[1])
    assert done.returncode == 0 and done.stdout.strip(), done.stderr[-3000:]
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert failed["problem"].startswith("2 of 4 shards failed; the first: a worker process died in the middle of "
                                        "this shard, 2 times (on Dask; the last was tcp://"), failed["problem"]
    assert "the 2 finished shards are kept" in failed["hint"]
    rerun = run_shards(list(range(12)), shard_that_squares, work, shard_size=3, workers=1)
    assert rerun.ran == [1, 2]
    assert [record["square"] for output in rerun.outputs for record in output.failures] == [j * j for j in range(12)]
