"""The flow that runs any recipe, and the closing figures of a run.

A pipeline module (flows/keyword_spotting.py, flows/detection.py) offers four functions with
the same shape, `generate`, `label`, `train` and `export`; the CLI runs them one at a time and
the Prefect flow below runs them as tasks, with the review step between labelling and training.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator

from edgedistill.errors import EdgedistillError
from edgedistill.recipe import AnyRecipe, DetectionRecipe, KeywordSpottingRecipe, load_recipe
from edgedistill.shards import RunShard, ShardMapper, ShardOutput, WorkerPool, shards_run_by, worker_died
from flows.runs import RunPaths


def open_recipe(path: str | Path) -> AnyRecipe:
    """The recipe, with its `device:` set for every model this process and its workers run."""
    from edgedistill.models import use_device

    recipe = load_recipe(path)
    use_device(recipe.device)
    return recipe


def pipeline_for(recipe: AnyRecipe) -> ModuleType:
    if isinstance(recipe, DetectionRecipe):
        from flows import detection

        return detection
    from flows import keyword_spotting

    return keyword_spotting


def prefect_defaults() -> None:
    """Prefect that starts reliably offline, on a slow first start too; call it before importing Prefect."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@contextmanager
def one_prefect_server() -> Iterator[None]:
    """The Prefect API of one run: the server the user configured (PREFECT_API_URL), or else one embedded
    server for the flow and every process of the run that talks to Prefect (Dask's workers). Left to
    itself, Prefect starts an embedded server in each such process (and once did in each process-pool
    worker, some outliving the run): a start-up each, and steady CPU."""
    prefect_defaults()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    try:
        # the settings reach this process's Prefect; the variable, the processes it starts (Dask's workers)
        os.environ["PREFECT_API_URL"] = server.api_url
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def prefect_shard_mapper(stage: str, pool: WorkerPool | None = None) -> ShardMapper:
    """Each shard of a stage becomes a Prefect task run on the flow's task runner: a thread that hands the
    shard to `pool`'s worker processes, or, without a pool, a Dask worker (or this process) that runs it."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.futures import as_completed

    def run_one(run_shard: RunShard, shard: list) -> ShardOutput:
        return pool.run(run_shard, shard) if pool else run_shard(shard)

    # the shard files are the cache (edgedistill/shards.py), not Prefect's results; a shard whose worker
    # died is tried again by the pool (or by Dask), a shard that raised would only raise again
    shard_task = task(run_one, name=f"{stage}-shard", cache_policy=NO_CACHE, persist_result=False)

    def run(run_shard: RunShard, shards: dict[int, list]):
        futures = {shard_task.submit(run_shard, shard): index for index, shard in shards.items()}
        for future in as_completed(list(futures)):
            try:
                outcome = future.result()
            except Exception as error:
                outcome = _dask_worker_death(error)
            yield futures[future], outcome

    return run


def _dask_worker_death(error: Exception) -> Exception:
    """Dask's KilledWorker (each worker that ran the shard died under it) as the error a pool worker's death gives."""
    distributed = sys.modules.get("distributed")  # not imported: not on Dask
    if distributed is None or not isinstance(error, distributed.KilledWorker):
        return error
    return worker_died(error.allowed_failures + 1, f"on Dask; the last was {error.last_worker.address}")


def task_runner(dask: str | None = None):
    """Where shard tasks run: threads here, each handing its shard to a worker process (`WorkerPool`), or
    Dask ("local" starts a cluster on this machine)."""
    if dask is None:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=os.cpu_count())
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as error:
        raise EdgedistillError("running on Dask needs prefect-dask",
                               "install the extra: pip install 'edgedistill[dask]'") from error
    return DaskTaskRunner(cluster_class=_local_cluster) if dask == "local" else DaskTaskRunner(address=dask)


def _local_cluster(**kwargs):
    """A Dask cluster on this machine whose workers, like a WorkerPool's, run one shard at a time each: one that
    dies takes only its own shard with it, which is tried on WorkerPool.ATTEMPTS workers and then fails."""
    import dask
    from distributed import LocalCluster

    # a shard queued on a worker behind the one running would count that worker's death against it too
    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        return LocalCluster(threads_per_worker=1, scheduler_kwargs={"allowed_failures": WorkerPool.ATTEMPTS - 1},
                            **kwargs)


def recipe_flow(dask: str | None = None):
    """The Prefect flow for any recipe, built lazily so importing this module skips Prefect.

    Tasks take and return small values (paths, version ids); the shards inside a stage are tasks
    of their own on the flow's task runner (`task_runner`). Prefect's result caching is off:
    the dataset is the cache, each stage finds the version it made before, finished shards stay on
    disk, and training resumes from its checkpoint, so a rerun after a crash or Ctrl-C picks up
    where it stopped.
    """
    from prefect import flow, task
    from prefect.artifacts import create_markdown_artifact
    from prefect.cache_policies import NO_CACHE

    from flows.progress import progress_bar
    from flows.review import review_step

    def stage(name: str, work: Callable, retries: int = 1):
        def run(recipe_path: str, out: str, *args):
            recipe = open_recipe(recipe_path)
            with (WorkerPool(os.cpu_count() or 1) if dask is None else nullcontext()) as pool, \
                    progress_bar(name) as update, shards_run_by(prefect_shard_mapper(name, pool)):
                return work(pipeline_for(recipe), recipe, RunPaths.of(recipe, out), *args, update)

        return task(name=name, cache_policy=NO_CACHE, retries=retries)(run)

    generate = stage("generate", lambda p, r, paths, update: p.generate(r, paths, update))
    label = stage("label", lambda p, r, paths, version, update: p.label(r, paths, version, update))
    # returns nothing: export reads the record training leaves beside the model
    train = stage("train", lambda p, r, paths, version, update: p.train(r, paths, version, update) and None,
                  retries=0)

    @task(name="export", cache_policy=NO_CACHE)
    def export(recipe_path: str, out: str) -> str:
        recipe = open_recipe(recipe_path)
        paths = RunPaths.of(recipe, out)
        manifest = pipeline_for(recipe).export(recipe, paths)
        made = paths.bundle_of(manifest.dataset["version"])
        create_markdown_artifact(key=f"{recipe.name.lower().replace('_', '-')}-bundle",
                                 markdown=summary_markdown(manifest, made))
        return str(made)

    @flow(name="edgedistill-recipe", log_prints=True, task_runner=task_runner(dask))
    def run_recipe(recipe_path: str, out: str) -> str:
        recipe = open_recipe(recipe_path)
        check_evaluation_set(recipe)
        version_id = label(recipe_path, out, generate(recipe_path, out))
        if recipe.review.enabled:  # pauses the run until people have reviewed the doubtful samples
            version_id = review_step(RunPaths.of(recipe, out).dataset, recipe.review, version_id)
        train(recipe_path, out, version_id)
        return export(recipe_path, out)

    return run_recipe



def check_evaluation_set(recipe: AnyRecipe) -> None:
    """A wrong `evaluate.real` is an error before the run, not after it has generated and trained."""
    if isinstance(recipe, KeywordSpottingRecipe) and recipe.evaluate.real:
        from edgedistill.real_speech import read_labelled_clips

        read_labelled_clips(recipe.evaluate.real, decode=True)
    if isinstance(recipe, DetectionRecipe) and recipe.evaluate.real:
        from edgedistill.real_photos import read_labelled_photos

        read_labelled_photos(recipe.evaluate.real, recipe.class_names, recipe.evaluate.min_share)


def summary_rows(manifest, bundle: Path) -> list[tuple[str, str]]:
    """The closing figures of a run: the CLI's table and the Prefect artifact show these rows."""
    int8 = manifest.metrics.get("int8", {})
    floating = manifest.metrics.get("float", {})
    tflm = manifest.targets.get("tflite_micro", {})
    vela = manifest.targets.get("vela", {})
    quality = "accuracy" if "accuracy" in int8 else "f1"
    promotion = manifest.metrics.get("promotion")
    return [
        ("bundle", str(bundle)),
        *([("promoted to the run's bundle/", f"{'yes' if promotion['promote'] else 'no'}: {promotion['reason']}")]
          if promotion else []),
        (f"float {quality} (held out)", _pct(floating.get(quality))),
        (f"int8 {quality} (held out)", _pct(int8.get(quality))),
        *((f"int8 {quality}, held-out {origin} ({figures['count']} clips)", _pct(figures.get(quality)))
          for origin, figures in int8.get("by_origin", {}).items()),
        *_streaming_and_real_rows(manifest),
        ("int8 model size", f"{manifest.file('model_int8').bytes / 1024:.1f} KiB"),
        ("TFLite Micro arena", f"{tflm.get('arena_bytes', 0) / 1024:.1f} KiB"),
        ("Ethos-U SRAM / flash", f"{vela.get('sram_bytes', 0) / 1024:.1f} / {vela.get('flash_bytes', 0) / 1024:.1f} KiB"
         if vela.get("sram_bytes") is not None else "not compiled"),
        *_api_rows(manifest),
    ]


def _api_rows(manifest) -> list[tuple[str, str]]:
    """What the API calls behind the dataset cost (the verifier, the API speech engine, image_api)."""
    rows = []
    for name, usage in manifest.dataset.get("api_usage", {}).items():
        cost = "unknown cost" if usage["cost"] is None else f"${usage['cost']:.4f}"
        rows.append((f"API {name}: requests (from cache), estimated cost",
                     f"{usage['asked']} ({usage['from_cache']}), {cost}"))
    return rows


def summary_markdown(manifest, bundle: Path) -> str:
    return "| figure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in summary_rows(manifest, bundle))


def _streaming_and_real_rows(manifest) -> list[tuple[str, str]]:
    streaming, real = manifest.metrics.get("streaming"), manifest.metrics.get("real")
    rows = []
    if streaming:
        rows.append(("streaming, held out: false accepts/h, false rejects",
                     f"{streaming['false_accepts_per_hour']:.2f}, {_pct(streaming['false_reject_rate'])}"))
    if real and "student" in real:  # detection: the student beside its teacher on real photos
        student, teacher = real["student"], real.get("teacher")
        rows.append((f"real photos: F1 ({student['photos']} photos, {student['objects']} objects)", _pct(student["f1"])))
        if teacher:
            rows.append(("real photos: teacher F1, share kept", f"{_pct(teacher['f1'])}, "
                                                                f"{_pct(real['student_to_teacher_f1'])}"))
    elif real:
        rows += [(f"real: keywords recognised ({real['keyword_clips']} clips, {real['keyword_speakers']} speakers)",
                  _pct(real["keyword_accuracy"])),
                 (f"real: other words rejected ({real['non_keyword_clips']} clips)", _pct(real["non_keyword_rejected"]))]
    return rows


def vela_summary(manifest) -> str:
    """The Ethos-U figures in one line, for the benchmark tables."""
    vela = manifest.targets.get("vela", {})
    if vela.get("sram_bytes") is None:
        return f"not compiled ({vela.get('reason', 'no Vela report')})"
    return (f"{vela['sram_bytes'] / 1024:.1f} KiB SRAM, {vela.get('flash_bytes', 0) / 1024:.1f} KiB flash, "
            f"{vela.get('cycles_total')} cycles, {(vela.get('npu_operator_share') or 0) * 100:.0f}% ops on NPU")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"
