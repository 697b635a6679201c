"""Time the default keyword-spotting recipe stage by stage and print the figures as a table.

    .venv/bin/python benchmarks/keyword_spotting.py [RECIPE] [--out DIR]

Targets (issue 2): end to end under 20 minutes on 2 cores, int8 model <= 64 KB, TFLite Micro
arena <= 32 KB, int8 accuracy on held-out voices >= 90%.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgedistill.recipe import load_recipe
from flows.keyword_spotting import (check_step, export_step, open_dataset, synthesize_step, train_step,
                                    training_set_step)
from flows.run import RunPaths, vela_summary

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "digits.yaml"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmark"))
    parser.add_argument("--keep", action="store_true", help="reuse an earlier run (times only what is left)")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    paths = RunPaths(Path(args.out))
    if paths.out.exists() and not args.keep:
        shutil.rmtree(paths.out)
    dataset = open_dataset(recipe, paths.dataset)
    times: dict[str, float] = {}

    def timed(name, fn, *a):
        started = time.perf_counter()
        result = fn(*a)
        times[name] = time.perf_counter() - started
        return result

    synthesized = timed("synthesize", synthesize_step, recipe, dataset)
    checked = timed("whisper check", check_step, recipe, dataset, synthesized)
    training_set = timed("split + augment", training_set_step, recipe, dataset, checked)
    trained = timed("train", train_step, recipe, dataset, training_set, paths)
    manifest = timed("export", export_step, recipe, dataset, trained, paths)
    total = sum(times.values())

    n_synth = synthesized.counts["samples"]
    n_keyword_clips = sum(v for k, v in synthesized.counts.items()
                          if k.startswith("class:") and k not in ("class:_unknown_", "class:_silence_"))
    n_aug = training_set.counts["samples"] - checked.counts["samples"]
    int8 = manifest.metrics["int8"]
    tflm = manifest.targets.get("tflite_micro", {})
    table = Table(title=f"keyword spotting: {recipe.name}")
    for column in ("figure", "value", "target"):
        table.add_column(column)
    rows = [
        ("end to end", f"{total / 60:.1f} min", "< 20 min"),
        *[(f"  {name}", f"{seconds:.0f} s", "") for name, seconds in times.items()],
        ("synthesis throughput", f"{n_synth / times['synthesize']:.1f} clips/s ({n_synth} clips)", ""),
        ("Whisper check throughput", f"{n_keyword_clips / times['whisper check']:.1f} keyword clips/s", ""),
        ("clips dropped by the check", str(synthesized.counts["samples"] - checked.counts["samples"]), ""),
        ("augmentation", f"{n_aug / times['split + augment']:.1f} clips/s ({n_aug} clips)", ""),
        ("training", f"{trained.samples_per_second:.0f} samples/s, {trained.epochs_run} epochs "
                     f"(best {trained.best_epoch})", ""),
        ("float accuracy, held-out voices", f"{manifest.metrics['float']['accuracy'] * 100:.1f}%", ""),
        ("int8 accuracy, held-out voices", f"{int8['accuracy'] * 100:.1f}%", ">= 90%"),
        ("int8 false accepts (_unknown_/_silence_)",
         " / ".join(f"{(v or 0) * 100:.1f}%" for v in int8["false_accept_rate"].values()), ""),
        ("int8 model (flash)", f"{manifest.file('model_int8').bytes / 1024:.1f} KiB", "<= 64 KB"),
        ("TFLite Micro arena", f"{tflm.get('arena_bytes', 0) / 1024:.1f} KiB", "<= 32 KB"),
        ("Ethos-U55-128 (Vela)", vela_summary(manifest), ""),
        ("test clips (held-out voices)", str(int8["count"]), ""),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
