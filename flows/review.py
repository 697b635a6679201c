"""`edgedistill review push|pull|serve`, and the flow step that waits for people.

The step pushes the doubtful samples, pauses the Prefect flow run while people work in Label
Studio (a watcher resumes it once every task has an annotation, or when the wait times out; a
person may also resume it by hand from the Prefect UI to go on with what is done), then pulls
the reviews into a new dataset version. Push and pull are idempotent, so a rerun of the flow
resumes where it stopped.
"""

from __future__ import annotations

import contextvars
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich import box
from rich.table import Table

from edgedistill.dataset import Dataset, VersionInfo
from edgedistill.errors import EdgedistillError
from edgedistill.recipe import ReviewSettings
from flows.progress import console, print_table
from flows.runs import newest
from labelers.label_studio import (REVIEW_STAGE, ReviewProgress, connection_from_env, pull_reviews,
                                   push_for_review, report_table, review_progress)

review_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                         help="Human review of auto-labels in Label Studio.")

DatasetArg = Annotated[str, typer.Argument(
    help="dataset folder (the one with dataset.json), a run folder (`edgedistill run --out`) holding one in "
         "dataset/, or a dataset's URL (s3://...)")]
VersionOpt = Annotated[Optional[str], typer.Option(
    "--version", help="dataset version (default: the newest labelled one, which training starts from; never the "
                      "composites or augmented clips training adds, nor a pull's)")]
ProjectOpt = Annotated[Optional[str], typer.Option("--project", help="Label Studio project title")]
ThresholdOpt = Annotated[Optional[float], typer.Option("--threshold", help="labels scoring below go to review")]
QcOpt = Annotated[Optional[float], typer.Option(
    "--qc-share", help="share of confident samples, and of samples with nothing found, also reviewed")]


def _settings(project: str | None, threshold: float | None, qc_share: float | None) -> ReviewSettings:
    given = {"project": project, "threshold": threshold, "qc_share": qc_share}
    return ReviewSettings(**{key: value for key, value in given.items() if value is not None})


def open_dataset(location: str) -> Dataset:
    """The dataset at `location`, or the one in a run folder's dataset/ (where `edgedistill run` keeps it)."""
    in_run = Path(location, "dataset")
    if not Path(location, "dataset.json").exists() and (in_run / "dataset.json").exists():
        return Dataset.open(in_run)
    return Dataset.open(location)


def labelled_version(dataset: Dataset, version_id: str | None) -> VersionInfo:
    """The version people review: the one asked for, else the newest that labelling made, as the flow
    reviews it; never a pull's (a later pull supersedes the earlier) nor what training derives from it
    (composites, augmented clips), which are made again from the reviewed version."""
    from flows import detection, keyword_spotting

    if version_id is not None:
        return dataset.version(version_id)
    stages = {"detection": detection.LABELLED_STAGES, "keyword_spotting": keyword_spotting.LABELLED_STAGES}
    found = newest(dataset, *(s for s in stages.get(dataset.info.task, ()) if s != REVIEW_STAGE), missing_ok=True)
    if found is None:
        raise EdgedistillError(f"dataset {dataset.location} has no labelled version to review",
                               "run `edgedistill label RECIPE` first, or name a version with --version")
    return found


@review_app.command()
def push(dataset: DatasetArg, version: VersionOpt = None, project: ProjectOpt = None,
         threshold: ThresholdOpt = None, qc_share: QcOpt = None) -> None:
    """Send the labelled version's doubtful samples, and a quality-check share of the confident ones and of
    those with nothing found, to Label Studio; safe to repeat."""
    opened = open_dataset(dataset)
    reviewed = labelled_version(opened, version)
    console.print(f"reviewing version {reviewed.id} ({reviewed.stage}) of {opened.location}"
                  + ("" if version else ": the newest labelled version (--version picks another)"))
    result = push_for_review(opened, connection_from_env(), _settings(project, threshold, qc_share), reviewed.id)
    print_table(f"review push: {result.project_url}",
                [("doubtful labels", result.routes["doubtful"]),
                 ("nothing found (sampled)", result.routes["nothing_found"]),
                 ("quality check (sampled)", result.routes["quality_check"]),
                 ("accepted automatically", result.routes["auto"]),
                 ("new tasks", result.imported), ("tasks already there", result.already_there)], "samples")
    if result.config_edited:
        console.print("note: the project's labelling config was edited by hand; it was left as it is")


@review_app.command()
def pull(dataset: DatasetArg, version: VersionOpt = None, project: ProjectOpt = None,
         threshold: ThresholdOpt = None, qc_share: QcOpt = None) -> None:
    """Read the reviews of the labelled version back into a new dataset version and print the auto-label
    quality report."""
    opened = open_dataset(dataset)
    reviewed = labelled_version(opened, version)
    result = pull_reviews(opened, connection_from_env(), _settings(project, threshold, qc_share), reviewed.id)
    console.print(quality_table(result.report))
    console.print(f"version {result.version.id} of {opened.location}, made from {reviewed.id} ({reviewed.stage}); "
                  "samples: " + ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in result.counts.items()))
    if result.missing:
        console.print(f"{len(result.missing)} sample(s) routed to people have no task in Label Studio (deleted there, "
                      "or never pushed); they keep their auto-labels: `edgedistill review push` sends them")
    if result.version.report:
        console.print(f"report: {opened.location}/{result.version.report}")


def quality_table(report: dict) -> Table:
    """Per class, what became of its auto-labels; narrow enough for an 80-column terminal."""
    table = Table(title="auto-labels per class after review (counts are labels, not samples)",
                  box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    table.add_column("class", overflow="fold", ratio=1)
    for column in ("accepted", "corrected", "rejected", "auto-\naccepted", "pending", "precision", "recall"):
        table.add_column(column, justify="right", no_wrap=True, min_width=max(len(word) for word in column.split()))
    for row in report_table(report):
        table.add_row(*row)
    return table


@review_app.command()
def serve(data_dir: Annotated[Path, typer.Option(help="where Label Studio keeps its database and credentials")] =
          Path.home() / ".edgedistill" / "label-studio",
          port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8080,
          document_root: Annotated[Path, typer.Option(help="folder above your datasets (media are served "
                                                      "from under it)")] = Path.cwd()) -> None:
    """Start a local Label Studio, print its URL and credentials, and stop it cleanly on Ctrl-C, SIGTERM or SIGHUP."""
    from labelers.label_studio_server import start_label_studio

    _stop_on_interrupt_or_term()
    console.print(f"starting Label Studio in {data_dir} (the first start takes about two minutes)...")
    server = start_label_studio(data_dir, port=port, document_root=document_root)
    try:
        console.print(f"Label Studio is up: {server.url}\n  user {server.username}  password {server.password}\n"
                      f"  for edgedistill, in another shell:\n"
                      f"    export LABEL_STUDIO_URL={server.url}\n"
                      f"    export LABEL_STUDIO_API_KEY={server.token}\n"
                      f"    export LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={document_root.resolve()}\n"
                      "press Ctrl-C to stop it")
        while server.process.poll() is None:
            time.sleep(1.0)
        raise EdgedistillError(f"Label Studio stopped by itself (code {server.process.returncode})",
                               f"see {server.data_dir / 'label-studio.log'}")
    except KeyboardInterrupt:
        console.print("stopping Label Studio...")
    finally:
        server.stop()


def _stop_on_interrupt_or_term() -> None:
    """Ctrl-C, SIGTERM (a service manager's or `kill`'s stop) and SIGHUP (the terminal closed) end `serve`
    cleanly, also where it was started with SIGINT ignored, as a shell's background job (`&`) is; SIGHUP
    stays ignored under `nohup`, which asked for it to outlive the terminal."""
    stops = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        stops.append(signal.SIGHUP)

    def interrupt(signum, frame):
        for stop in stops:  # the first signal stops the server; a second one must not cut that stop short
            signal.signal(stop, signal.SIG_IGN)
        raise KeyboardInterrupt

    for stop in stops:
        signal.signal(stop, interrupt)


# -- waiting for people inside a flow -------------------------------------------------------------
def wait_for_people(check: Callable[[], ReviewProgress], timeout_s: float, poll_s: float) -> ReviewProgress:
    """Block until `check()` says every task is annotated, or `timeout_s` passes.

    Inside a Prefect flow run the run is Paused meanwhile (visible in the UI as waiting for
    people); a watcher thread resumes it. Outside a flow it simply polls.
    """
    from prefect.context import FlowRunContext

    progress = check()
    context = FlowRunContext.get()
    if progress.finished:
        return progress
    if context is None:
        return _poll_until_done(check, timeout_s, poll_s)
    from prefect.flow_runs import pause_flow_run

    stop = threading.Event()
    watcher = threading.Thread(target=contextvars.copy_context().run, daemon=True,
                               args=(_resume_when_done, context.flow_run.id, check, timeout_s, poll_s, stop))
    watcher.start()
    try:
        # the pause outlives the watcher's deadline: the watcher, or a person, always resumes it
        pause_flow_run(timeout=int(timeout_s + 4 * poll_s + 60), poll_interval=max(1, int(poll_s)),
                       key="label-studio-review")
    finally:
        stop.set()
        watcher.join(timeout=poll_s + 5)
    return check()


def _poll_until_done(check: Callable[[], ReviewProgress], timeout_s: float, poll_s: float) -> ReviewProgress:
    deadline = time.monotonic() + timeout_s
    progress = check()
    while not progress.finished and time.monotonic() < deadline:
        time.sleep(poll_s)
        progress = check()
    return progress


def _resume_when_done(flow_run_id, check: Callable[[], ReviewProgress], timeout_s: float, poll_s: float,
                      stop: threading.Event) -> None:
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import NotPausedError, resume_flow_run

    deadline = time.monotonic() + timeout_s
    while not stop.wait(poll_s):
        try:
            finished = check().finished
        except EdgedistillError:
            finished = False  # Label Studio briefly down: keep waiting until the deadline
        if not (finished or time.monotonic() >= deadline):
            continue
        try:
            resume_flow_run(flow_run_id)
            return
        except NotPausedError:
            continue  # the flow has not reached its pause yet, or a person resumed it already
        except FlowPauseTimeout:
            return


def _push(dataset_path: str, settings: ReviewSettings, version_id: str | None) -> int:
    # the connection is read inside the task, so the token never becomes a task input
    dataset = Dataset.open(dataset_path)
    return push_for_review(dataset, connection_from_env(), settings, labelled_version(dataset, version_id).id).imported


def _pull(dataset_path: str, settings: ReviewSettings, version_id: str | None) -> str:
    dataset = Dataset.open(dataset_path)
    return pull_reviews(dataset, connection_from_env(), settings, labelled_version(dataset, version_id).id).version.id


def review_step(dataset_path: str, settings: ReviewSettings, version_id: str | None = None) -> str:
    """Push `version_id` (default: the newest labelled version), wait for people, pull: the id of the
    reviewed version. Call it inside a flow."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    # Label Studio is outside state: never reuse a cached push or pull
    task(name="review-push", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)(_push)(
        dataset_path, settings, version_id)
    connection = connection_from_env()  # once: the watcher polls every few seconds
    wait_for_people(lambda: review_progress(Dataset.open(dataset_path), connection, settings),
                    settings.wait_hours * 3600, settings.poll_seconds)
    return task(name="review-pull", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)(_pull)(
        dataset_path, settings, version_id)


def review_flow_fn():
    """A standalone review flow (built lazily so importing this module does not import Prefect)."""
    from prefect import flow

    @flow(name="review", log_prints=False)
    def review_flow(dataset_path: str, settings: dict | None = None) -> str:
        return review_step(dataset_path, ReviewSettings(**(settings or {})))

    return review_flow
