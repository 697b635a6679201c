"""The `edgedistill` command: the front door (DESIGN.md, "Recipes and the CLI")."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from typer.core import TyperGroup

from edgedistill.errors import EdgedistillError
from flows import progress
from flows.progress import console, print_table, progress_bar
from flows.review import review_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Foundation models in, microcontroller models out.")

app.add_typer(review_app, name="review")

RecipeArg = Annotated[Path, typer.Argument(help="recipe YAML, e.g. recipes/digits.yaml")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="run folder (default: runs/<recipe name>)")]
DaskOpt = Annotated[Optional[str], typer.Option(
    "--dask", metavar="ADDRESS", help='run the shards on a Dask cluster (scheduler address, or "local" to start '
                                      'one here); default: a process pool on this machine')]


@app.callback()
def _options(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="show library output (framework warnings, logs) here; without it, it goes to the "
                                "log file: edgedistill.log in the run folder, or in ~/.cache/edgedistill")] = False,
             ) -> None:
    """(main() acts on --verbose, before any command runs; the option is here for --help and the parser.)"""


def _load(recipe_path: Path, out: Path | None):
    """The recipe, its pipeline module, and where its run lives."""
    from flows.run import open_recipe, pipeline_for
    from flows.runs import RunPaths

    recipe = open_recipe(recipe_path)
    paths = RunPaths.of(recipe, out or Path("runs") / recipe.name)
    progress.keep_log_in(paths.out / "edgedistill.log")
    return recipe, pipeline_for(recipe), paths


@app.command()
def run(recipe: RecipeArg, out: OutOpt = None, dask: DaskOpt = None) -> None:
    """The whole flow, ending in a bundle under OUT."""
    from edgedistill.bundle import load_bundle
    from flows.run import one_prefect_server, recipe_flow

    _, _, paths = _load(recipe, out)
    paths.out.mkdir(parents=True, exist_ok=True)
    with one_prefect_server():
        bundle = recipe_flow(dask)(str(recipe.resolve()), str(paths.out.resolve()))
    _closing_table(load_bundle(bundle), Path(bundle))


@app.command()
def generate(recipe: RecipeArg, out: OutOpt = None) -> None:
    """Make samples: synthetic speech (keywords), or photos, composites and generated images (detection)."""
    parsed, pipeline, paths = _load(recipe, out)
    with progress_bar("generate") as update:
        version = pipeline.generate(parsed, paths, update)
    _print_counts(paths, version)


class _LabelCommands(TyperGroup):
    """`label RECIPE` runs the recipe's labelling; `label recordings RECIPE PATH...` mines recordings. The
    first word picks: a sub-command's name, or else it is the recipe of the default command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] != "--help":
            args = [_LABEL_RECIPE, *args]
        return super().parse_args(ctx, args)


_LABEL_RECIPE = "recipe"  # the default sub-command's name, which nobody has to type
label_app = typer.Typer(
    cls=_LabelCommands, no_args_is_help=True, subcommand_metavar="RECIPE | recordings RECIPE PATH...",
    help="Label or check the samples: `label RECIPE` runs the Whisper check (keywords; then mines the recipe's "
         "recordings) or auto-labelling (detection); `label recordings RECIPE PATH...` mines keyword clips from "
         "real recordings.")
app.add_typer(label_app, name="label")


@label_app.command(_LABEL_RECIPE, hidden=True)
def label(recipe: RecipeArg, out: OutOpt = None) -> None:
    """Label or check the generated samples: the Whisper check (keywords), auto-labelling and its
    verification (detection)."""
    parsed, pipeline, paths = _load(recipe, out)
    with progress_bar("label") as update:
        version = pipeline.label(parsed, paths, None, update)
    _print_counts(paths, version)
    _print_verification(paths, version)


@label_app.command("recordings")
def label_recordings(
        recipe: RecipeArg,
        locations: Annotated[list[str], typer.Argument(metavar="PATH...", help="recordings of any length and format: "
                                                                               "files or folders, local or s3://...")],
        out: OutOpt = None) -> None:
    """Cut keyword, `_unknown_` and `_silence_` clips from long real recordings where Whisper hears the words,
    and add them to the run's labelled clips (the ones `train` reads)."""
    from edgedistill.dataset import Dataset
    from edgedistill.recipe import KeywordSpottingRecipe

    parsed, pipeline, paths = _load(recipe, out)
    if not isinstance(parsed, KeywordSpottingRecipe):
        raise EdgedistillError(f"{recipe} is a {parsed.task} recipe; recordings are mined for keyword spotting",
                               "use a recipe with `task: keyword_spotting`")
    with progress_bar("mine recordings") as update:
        mined, version = pipeline.label_recordings(parsed, paths, locations, update)
    dataset = Dataset.open(paths.dataset)
    report = dataset.report(mined)
    print_table(f"recordings mined into version {mined.id}", [
        *((Path(row["file"]).name, f"{row['minutes']:.1f} min: {row['keyword']} keyword, {row['_unknown_']} _unknown_, "
                        f"{row['_silence_']} _silence_ clips" + (f" ({row['note']})" if row["note"] else ""))
          for row in report["recordings"]),
        *((Path(row["file"]).name, f"skipped: {row['reason']}") for row in report["unreadable"]),
        ("audio mined", f"{report['audio_hours']:.2f} h at {report['audio_hours_per_hour']:.0f} audio-hours per hour"
                        if report["audio_hours_per_hour"] else f"{report['audio_hours']:.2f} h (mined before)"),
        ("keyword clips for review", f"{report['keyword_clips_for_review']} (Whisper's probability below "
                                     f"review.threshold {parsed.review.threshold})"),
    ], "recording")
    _print_counts(paths, version.id)
    console.print(f"report: {dataset.location}/{mined.report}")


@app.command()
def train(recipe: RecipeArg, out: OutOpt = None) -> None:
    """Split (by voice, photo or cut-out), augment, and train on the newest labelled version."""
    parsed, pipeline, paths = _load(recipe, out)
    with progress_bar("train") as update:
        trained = pipeline.train(parsed, paths, None, update)
    print_table(f"model {trained.path}", [(key, f"{value:.3f}") for key, value in trained.float_metrics.items()
                                          if isinstance(value, float)], "held-out figure")


@app.command()
def export(recipe: RecipeArg, out: OutOpt = None) -> None:
    """Export the trained model as a bundle: int8 TFLite, ONNX, C header, TFLite Micro check, Vela."""
    parsed, pipeline, paths = _load(recipe, out)
    manifest = pipeline.export(parsed, paths)
    _closing_table(manifest, paths.bundle_of(manifest.dataset["version"]))


@app.command()
def predict(bundle: Annotated[Path, typer.Argument(help="bundle folder")],
            files: Annotated[list[Path], typer.Argument(help="audio (any format and rate) or image files")],
            as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line only")] = False,
            stream: Annotated[bool, typer.Option(
                "--stream", help="audio: listen to recordings of any length as the device does, one JSON object per "
                                 "detection {file, label, start, end, score}")] = False) -> None:
    """Run a bundle's int8 model on audio or image files, with exactly the preprocessing of its manifest."""
    from edgedistill.inference import predict_files, stream_file

    failed = 0
    for file in files:
        try:
            if stream:
                results, notes = _stream_with_progress(bundle, file, stream_file)
            else:
                results, notes = predict_files(bundle, [file]), []
        except EdgedistillError as error:
            if "bundle" in error.problem:
                raise
            failed += 1
            results, notes = [{"file": str(file), "error": error.problem}], []
        for note in notes:
            console.print(f"[yellow]note:[/yellow] {note}")
        for result in results:
            if as_json:
                print(json.dumps(result), flush=True)
            else:
                console.print(json.dumps({k: v for k, v in result.items() if k != "scores"}))
    if failed:
        raise typer.Exit(code=1)


def _stream_with_progress(bundle: Path, file: Path, stream_file) -> tuple[list[dict], list[str]]:
    with progress_bar(f"listening {file.name}"[:16]) as update:
        return stream_file(bundle, file, lambda seconds: update(round(seconds), None))


@app.command()
def deploy(recipe: RecipeArg,
           cron: Annotated[Optional[str], typer.Option(help='cron schedule, e.g. "0 3 * * *" (03:00 daily)')] = None,
           interval: Annotated[Optional[int], typer.Option(min=1, metavar="SECONDS",
                                                           help="run every SECONDS instead")] = None,
           out: OutOpt = None, dask: DaskOpt = None) -> None:
    """Deploy the recipe's flow on a Prefect server and serve its scheduled runs until stopped (Ctrl-C)."""
    from flows.run import prefect_defaults, recipe_flow

    prefect_defaults()
    schedule = _schedule(cron, interval)
    _check_prefect_server()

    parsed, _, paths = _load(recipe, out)
    # one run at a time: a run that outlasts the interval would otherwise race the next over the same dataset
    recipe_flow(dask).serve(name=parsed.name, schedules=[schedule], limit=1,
                            parameters={"recipe_path": str(recipe.resolve()), "out": str(paths.out.resolve())})


def _schedule(cron: str | None, interval: int | None):
    if (cron is None) == (interval is None):
        raise EdgedistillError("deploy needs exactly one schedule: --cron or --interval",
                               'e.g. --cron "0 3 * * *" (every day at 03:00) or --interval 3600 (every hour)')
    from datetime import timedelta

    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    if interval is not None:
        return IntervalSchedule(interval=timedelta(seconds=interval))
    try:
        return CronSchedule(cron=cron)
    except ValueError as error:
        raise EdgedistillError(f"--cron {cron!r} is not a cron schedule",
                               'five fields: minute hour day-of-month month day-of-week, e.g. "0 3 * * *"') from error


def _check_prefect_server() -> None:
    """A deployment lives on a Prefect server that outlives this command, not on a run's embedded one."""
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise EdgedistillError("no Prefect server is configured (PREFECT_API_URL is not set)",
                               "start one with `prefect server start`, then set PREFECT_API_URL=http://127.0.0.1:4200/api")
    with get_client(sync_client=True) as client:
        if (error := client.api_healthcheck()) is not None:
            raise EdgedistillError(f"the Prefect server at {url} does not answer ({error})",
                                   "start it with `prefect server start`, or point PREFECT_API_URL at one that runs")


class LabelFormat(str, Enum):
    coco = "coco"
    yolo = "yolo"
    labelstudio = "labelstudio"


@app.command("import")
def import_labels(
        label_format: Annotated[LabelFormat, typer.Argument(metavar="FORMAT", help="coco, yolo or labelstudio")],
        path: Annotated[Path, typer.Argument(help="a COCO JSON, a YOLO folder (images/, labels/, data.yaml) or a "
                                                  "Label Studio JSON export")],
        dataset: Annotated[str, typer.Argument(help="dataset folder or URL (s3://...); made when it does not exist")],
) -> None:
    """Bring labels made elsewhere in as a dataset version: people's labels, which `label` adds to the auto-labels."""
    from edgedistill.formats.importer import import_labels as import_files

    imported = import_files(label_format.value, path, dataset)
    report, version = imported.report, imported.version
    print_table(f"dataset {imported.dataset.location} version {version.id} (import)",
                [("images", report["images"]), ("images with no object", report["empty_images"]),
                 *((f"boxes: {name}", count) for name, count in report["objects"].items()),
                 ("crowd regions left out", report["crowd_regions_left_out"]),
                 ("duplicate images left out", len(report["duplicate_images_left_out"]))], "count")
    if imported.found:
        console.print("these files were imported before: their version was found, nothing new was written")
    console.print(f"report: {imported.dataset.location}/{version.report}")


@app.command("export-labels")
def export_labels(
        label_format: Annotated[LabelFormat, typer.Argument(metavar="FORMAT", help="coco, yolo or labelstudio")],
        dataset: Annotated[str, typer.Argument(help="dataset folder or URL (s3://...), e.g. runs/faces/dataset")],
        out: Annotated[Path, typer.Argument(help="a new folder for the labels and copies of the images")],
        version: Annotated[Optional[str], typer.Option(help="version id or prefix (default: the newest)")] = None,
) -> None:
    """Write a dataset version's images and labels as COCO, YOLO or a Label Studio export, to use elsewhere."""
    from edgedistill.formats.exporter import export_labels as export_files

    exported = export_files(label_format.value, dataset, out, version)
    report, version_info = exported.report, exported.version
    print_table(f"dataset {exported.dataset.location} version {version_info.id} ({version_info.stage}) "
                f"as {label_format.value}",
                [("images", report["images"]), ("images with no object", report["empty_images"]),
                 *((f"boxes: {name}", count) for name, count in report["objects"].items()),
                 ("rejected in review, left out", report["rejected_left_out"])], "count")
    console.print(f"written: {exported.path}")


def _print_counts(paths, version_id: str) -> None:
    from edgedistill.dataset import Dataset

    version = Dataset.open(paths.dataset).version(version_id)
    print_table(f"dataset {paths.dataset} version {version.id} ({version.stage})", version.counts.items(), "count")


def _print_verification(paths, version_id: str) -> None:
    """What the vision-language verifier said and cost, when the version's lineage went through it."""
    from edgedistill.dataset import Dataset

    dataset = Dataset.open(paths.dataset)
    verified = next((v for v in dataset.lineage(dataset.version(version_id)) if v.stage == "verify"), None)
    report = dataset.report(verified) if verified else None
    if not report:
        return
    usage = report["api_usage"]["verify"]
    cost = "unknown (no prices for this model)" if usage["cost"] is None else f"${usage['cost']:.4f}"
    print_table(f"verification by {report['model']}", [
        *((f"labels {outcome}", count) for outcome, count in report["labels"].items()),
        ("images checked", report["images_checked"]),
        ("images left unchecked (budget spent)", report["images_left_unchecked"]),
        ("requests asked / answered from cache", f"{usage['asked']} / {usage['from_cache']}"),
        ("tokens in / out", f"{usage['input_tokens']} / {usage['output_tokens']}"),
        ("estimated cost", cost)])


def _closing_table(manifest, bundle: Path) -> None:
    from flows.run import summary_rows

    print_table(f"{manifest.name}: bundle ready", summary_rows(manifest, bundle))
    console.print(f"report: {bundle / 'report.html'}")


def main() -> None:
    # --verbose is the front door's option; accept it after the command's name too, where people type it
    args = sys.argv[1:]
    if "--" not in args and any(arg in ("--verbose", "-v") for arg in args):
        args = ["--verbose", *(arg for arg in args if arg not in ("--verbose", "-v"))]
    else:
        progress.log_to(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgedistill"
                        / "edgedistill.log")
    stopped_by: list[int] = []

    def stop(signum: int, frame: object) -> None:  # Ctrl-C, or `kill` from a person or a supervisor
        stopped_by.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # Prefect puts its own in place while a flow runs: see _stop_signal
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with SIGINT ignored
        signal.signal(signal.SIGINT, stop)
    try:
        app(args)
    except SystemExit:
        raise
    except BaseException as error:
        signum = stopped_by[0] if stopped_by else _stop_signal(error)
        if signum is not None:  # the stop, or what it broke on its way out (the Prefect server, stopped too)
            if not isinstance(error, KeyboardInterrupt):
                traceback.print_exc()  # into the log
            console.print(f"stopped ({signal.Signals(signum).name}): finished work is kept; run the same command "
                          "again to resume")
            sys.exit(128 + signum)
        if isinstance(error, EdgedistillError):
            console.print(f"[red]error:[/red] {error.problem}")
            if error.hint:
                console.print(f"  [yellow]->[/yellow] {error.hint}")
            sys.exit(2)
        if progress.log_file_path is None or not isinstance(error, Exception):  # --verbose: on the terminal
            raise
        traceback.print_exc()  # into the log
        console.print(f"[red]error:[/red] {type(error).__name__}: {error}\n"
                      f"  [yellow]->[/yellow] the full traceback is in {progress.log_file_path}; this is a bug in "
                      f"edgedistill or a library it runs, please report it with that traceback")
        sys.exit(1)


def _stop_signal(error: BaseException | None) -> int | None:
    """The signal that stopped the command, when `error` is that stop (Ctrl-C; Prefect's TerminationSignal
    for SIGTERM while a flow runs) or was raised while handling it."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return signal.SIGINT
        if type(error).__name__ == "TerminationSignal":
            return getattr(error, "signal", signal.SIGTERM)
        error = error.__cause__ or error.__context__
    return None


if __name__ == "__main__":
    main()
