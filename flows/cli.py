"""The `edgedistill` command: the front door (DESIGN.md, "Recipes and the CLI")."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgedistill.errors import EdgedistillError
from flows.progress import console, progress_bar
from flows.review import review_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Foundation models in, microcontroller models out.")

app.add_typer(review_app, name="review")

RecipeArg = Annotated[Path, typer.Argument(help="recipe YAML, e.g. recipes/digits.yaml")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="run folder (default: runs/<recipe name>)")]


def _prefect_defaults() -> None:
    """An embedded Prefect server that starts reliably offline, on a slow first start too."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def _paths(recipe_path: Path, out: Path | None):
    from edgedistill.recipe import load_recipe
    from flows.keyword_spotting import RunPaths

    recipe = load_recipe(recipe_path)
    return recipe, RunPaths(out or Path("runs") / recipe.name)


@app.command()
def run(recipe: RecipeArg, out: OutOpt = None) -> None:
    """The whole flow, ending in a bundle under OUT."""
    _prefect_defaults()
    from edgedistill.bundle import load_bundle
    from flows.keyword_spotting import keyword_spotting_flow_fn

    parsed, paths = _paths(recipe, out)
    paths.out.mkdir(parents=True, exist_ok=True)
    bundle = keyword_spotting_flow_fn()(str(recipe.resolve()), str(paths.out.resolve()))
    _closing_table(load_bundle(bundle), Path(bundle))


@app.command()
def generate(recipe: RecipeArg, out: OutOpt = None) -> None:
    """Synthesise the keywords, unknown words and silence with every offline TTS engine."""
    from flows.keyword_spotting import open_dataset, synthesize_step

    parsed, paths = _paths(recipe, out)
    dataset = open_dataset(parsed, paths.dataset)
    with progress_bar("synthesize") as update:
        version = synthesize_step(parsed, dataset, update)
    _print_counts(paths.dataset, version)


@app.command()
def label(recipe: RecipeArg, out: OutOpt = None) -> None:
    """Check the synthetic keywords with Whisper and centre them with voice activity detection."""
    from edgedistill.dataset import Dataset
    from flows.keyword_spotting import check_step, newest

    parsed, paths = _paths(recipe, out)
    dataset = Dataset.open(paths.dataset)
    with progress_bar("whisper check") as update:
        version = check_step(parsed, dataset, newest(dataset, "synthesize"), update)
    _print_counts(paths.dataset, version)


@app.command()
def train(recipe: RecipeArg, out: OutOpt = None) -> None:
    """Split by voice, augment, and train the keyword spotter on the checked clips."""
    from edgedistill.dataset import Dataset
    from flows.keyword_spotting import newest, train_step, training_set_step

    parsed, paths = _paths(recipe, out)
    dataset = Dataset.open(paths.dataset)
    with progress_bar("augment") as update:
        version = training_set_step(parsed, dataset, newest(dataset, "whisper_check"), update)
    with progress_bar("train") as update:
        trained = train_step(parsed, dataset, version, paths, lambda epoch, total, _: update(epoch, total))
    console.print(f"model: {trained.path}  held-out accuracy {trained.float_metrics['accuracy']:.3f}")


@app.command()
def export(recipe: RecipeArg, out: OutOpt = None) -> None:
    """Export the trained model as a bundle: int8 TFLite, ONNX, C header, Vela report."""
    from edgedistill.dataset import Dataset
    from flows.keyword_spotting import TrainedModel, export_step, frontend_for, newest
    from trainers.keyword_spotter import clip_features, evaluate, load_model

    parsed, paths = _paths(recipe, out)
    if not paths.model.exists():
        raise EdgedistillError(f"no trained model at {paths.model}", "run `edgedistill train` first")
    dataset = Dataset.open(paths.dataset)
    info = newest(dataset, "augment")
    model, labels = load_model(paths.model)
    test = clip_features(dataset, [s for s in dataset.samples(info.id) if s.split == "test"],
                         frontend_for(parsed), labels)
    trained = TrainedModel(paths.model, evaluate(model, test, labels), 0, 0, 0.0, 0.0)
    manifest = export_step(parsed, dataset, info, trained, paths)
    _closing_table(manifest, paths.bundle)


@app.command()
def predict(bundle: Annotated[Path, typer.Argument(help="bundle folder")],
            files: Annotated[list[Path], typer.Argument(help="audio files, any common format and rate")],
            as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line only")] = False) -> None:
    """Run a bundle's int8 model on audio files, with exactly the front end of its manifest."""
    from edgedistill.inference import predict_files

    failed = 0
    for file in files:
        try:
            result = predict_files(bundle, [file])[0]
        except EdgedistillError as error:
            if "bundle" in error.problem:
                raise
            failed += 1
            result = {"file": str(file), "error": error.problem}
        if as_json:
            print(json.dumps(result))
        else:
            shown = {k: v for k, v in result.items() if k != "scores"}
            console.print(json.dumps(shown))
    if failed:
        raise typer.Exit(code=1)


@app.command()
def deploy(recipe: RecipeArg, cron: Annotated[str, typer.Option(help='schedule, e.g. "0 3 * * *"')],
           out: OutOpt = None) -> None:
    """Serve the recipe's flow on a cron schedule (needs a Prefect server: `prefect server start`)."""
    _prefect_defaults()
    from flows.keyword_spotting import keyword_spotting_flow_fn

    parsed, paths = _paths(recipe, out)
    flow = keyword_spotting_flow_fn()
    flow.serve(name=parsed.name, cron=cron,
               parameters={"recipe_path": str(recipe.resolve()), "out": str(paths.out.resolve())})


def _print_counts(root: Path, version) -> None:
    table = Table(title=f"dataset {root} version {version.id}")
    table.add_column("count")
    table.add_column("value", justify="right")
    for key, value in version.counts.items():
        table.add_row(key, str(value))
    console.print(table)


def _closing_table(manifest, bundle: Path) -> None:
    from flows.keyword_spotting import summary_markdown

    table = Table(title=f"{manifest.name}: bundle ready")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for line in summary_markdown(manifest, bundle).splitlines()[2:]:
        _, key, value, _ = line.split("|")
        table.add_row(key.strip(), value.strip())
    console.print(table)
    console.print(f"report: {bundle / 'report.html'}")


def main() -> None:
    try:
        app()
    except EdgedistillError as error:
        console.print(f"[red]error:[/red] {error.problem}")
        if error.hint:
            console.print(f"  [yellow]->[/yellow] {error.hint}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted: finished work is kept; run the same command again to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
