"""Compositing throughput: composites per second by blending mode and number of processes.

    .venv/bin/python benchmarks/compositing.py [--images N] [--size W H] [--workers 1 2]

Uses synthetic cut-outs and generated backgrounds (fully offline), the recipe's defaults for
everything else (1-4 objects, scale 0.15-0.5, rotation, occlusion 0.2), and includes writing the
PNGs and labels into a dataset, i.e. what `edgedistill generate` pays per composite.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgedistill.dataset import Dataset, MediaPolicy, OntologyClass
from edgedistill.recipe import parse_recipe
from generators.compositing import composite_images, generated_backgrounds, synthetic_cutouts

CLASSES = {"helmet": ["hard hat"], "person": ["person"], "vest": ["safety vest"]}


def measure(images: int, size: tuple[int, int], blending: str, workers: int) -> tuple[float, int]:
    """Composites per second and labels made, from a cold work folder."""
    recipe = parse_recipe({"task": "detection", "name": "bench", "classes": CLASSES,
                           "compositing": {"images": images, "image_size": list(size), "blending": [blending]}})
    root = Path(tempfile.mkdtemp(prefix="compositing-bench-"))
    try:
        ontology = [OntologyClass(name=name, prompts=spec.prompts) for name, spec in recipe.classes.items()]
        dataset = Dataset.create(root, "bench", "detection", ontology, MediaPolicy(image_size=size))
        cutouts = synthetic_cutouts(recipe.class_names, 8, seed=0)
        backgrounds = generated_backgrounds(16, (size[0] * 3 // 2, size[1] * 3 // 2), seed=0)
        started = time.perf_counter()
        samples = composite_images(dataset, recipe, cutouts, backgrounds, root / "work", workers=workers)
        seconds = time.perf_counter() - started
        return len(samples) / seconds, sum(len(s.labels) for s in samples)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, nargs=2, default=[320, 320], metavar=("W", "H"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    table = Table(title=f"compositing: {args.images} images of {args.size[0]}x{args.size[1]}")
    for column in ("blending", "processes", "composites/s", "labels"):
        table.add_column(column, justify="right")
    for blending in ("none", "gaussian", "poisson"):
        for workers in args.workers:
            rate, labels = measure(args.images, tuple(args.size), blending, workers)
            table.add_row(blending, str(workers), f"{rate:.1f}", str(labels))
    Console().print(table)


if __name__ == "__main__":
    main()
