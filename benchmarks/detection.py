"""Time the offline detection recipe stage by stage and print its figures as a table.

    .venv/bin/python benchmarks/detection.py [RECIPE] [--out DIR] [--dataset URL]

`--dataset s3://BUCKET/NAME` keeps the dataset in object storage (the recipe's `dataset:`), with
an empty media cache in OUT/cache, as on a fresh machine.

Targets (issue 3): FOMO int8 <= 100 KB flash at 96x96, TFLite Micro arena <= 256 KB; centroid F1
on held-out composites (against their exact labels) and on held-out real photos (against the
teacher's labels).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from edgedistill.dataset import Dataset
from edgedistill.recipe import load_recipe
from flows import detection
from flows.run import RunPaths
from figures import bundle_rows, print_figures  # benchmarks/figures.py

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "faces.yaml"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmark-detection"))
    parser.add_argument("--dataset", help="where the dataset lives (default: OUT/dataset); must not exist yet")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    if args.dataset:
        recipe = recipe.model_copy(update={"dataset": args.dataset})
        os.environ["EDGEDISTILL_CACHE"] = str(Path(args.out) / "cache")
    paths = RunPaths.of(recipe, args.out)
    if paths.out.exists():
        shutil.rmtree(paths.out)
    times: dict[str, float] = {}

    def timed(name, fn, *a):
        started = time.perf_counter()
        result = fn(*a)
        times[name] = time.perf_counter() - started
        return result

    sources = timed("generate (photos)", detection.generate, recipe, paths)
    labelled = timed("label (teacher) + split", detection.label, recipe, paths, sources)
    trained = timed("composite + train", detection.train, recipe, paths, labelled)
    manifest = timed("export", detection.export, recipe, paths)

    dataset = Dataset.open(paths.dataset)
    photos = dataset.samples(labelled)
    final = dataset.samples(trained.version)
    composites = [s for s in final if s.provenance.source == "compositing"]

    def f1(metrics: dict) -> str:
        return f"{metrics['f1']:.3f} ({metrics['images']} images)" if metrics else "no held-out images"

    print_figures(f"detection: {recipe.name}, dataset at {dataset.location}", ("end to end", sum(times.values()), ""), times, [
        ("photos / with a teacher label", f"{len(photos)} / {sum(1 for s in photos if s.labels)}", ""),
        ("composites", f"{len(composites)}", ""),
        ("float F1, held-out composites", f1(trained.extra["composites"]), ""),
        ("float F1, held-out real photos vs teacher", f1(trained.extra["photos"]), ""),
        ("int8 F1, all held-out images", f"{manifest.metrics['int8'].get('f1', 0):.3f}", ""),
        ("training", f"{trained.epochs_run} epochs (best {trained.best_epoch}), {trained.seconds:.0f} s", ""),
        ("score threshold (best F1 on validation)", f"{manifest.input.frontend['heatmap']['threshold']}", ""),
        *bundle_rows(manifest, "<= 100 KB", "<= 256 KB"),
    ])

if __name__ == "__main__":
    main()
