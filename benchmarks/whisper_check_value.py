"""What the Whisper check buys: held-out accuracy of a model trained with and without it.

    .venv/bin/python benchmarks/whisper_check_value.py [RECIPE] [--out DIR]

Both models see the same voices in each split (splits hash the voice), and both are scored on
the same test clips: the checked test split, whose labels Whisper confirmed. Reuses whatever
`benchmarks/keyword_spotting.py --out DIR` already made there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgedistill.recipe import load_recipe
from flows.keyword_spotting import (check_step, frontend_for, open_dataset, synthesize_step, train_step,
                                    training_set_step)
from flows.runs import RunPaths
from trainers.keyword_spotter import clip_features, evaluate, load_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "digits.yaml"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmark"))
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    unchecked_recipe = recipe.model_copy(update={"whisper_check": recipe.whisper_check.model_copy(
        update={"enabled": False})})
    dataset = open_dataset(recipe, RunPaths(Path(args.out)).dataset)
    synthesized = synthesize_step(recipe, dataset)
    scores, sizes = {}, {}
    test_set = None
    for name, variant in (("with the Whisper check", recipe), ("VAD centring only", unchecked_recipe)):
        paths = RunPaths(Path(args.out) / ("." if variant is recipe else "unchecked"))
        training_set = training_set_step(variant, dataset, check_step(variant, dataset, synthesized))
        trained = train_step(variant, dataset, training_set, paths)
        if test_set is None:  # the checked test split scores both models
            test_set = [s for s in dataset.samples(training_set.id) if s.split == "test"]
        model, labels = load_model(trained.path)
        scores[name] = evaluate(model, clip_features(dataset, test_set, frontend_for(recipe), labels), labels)
        sizes[name] = sum(1 for s in dataset.samples(training_set.id) if s.split == "train")
    table = Table(title="what the Whisper check buys (float model, same held-out voices)")
    for column in ("training set", "train clips", "accuracy", "_unknown_ false accepts", "_silence_ false accepts"):
        table.add_column(column)
    for name, metrics in scores.items():
        fa = metrics["false_accept_rate"]
        table.add_row(name, str(sizes[name]), f"{metrics['accuracy'] * 100:.1f}%",
                      f"{(fa['_unknown_'] or 0) * 100:.1f}%", f"{(fa['_silence_'] or 0) * 100:.1f}%")
    Console().print(table)


if __name__ == "__main__":
    main()
