"""Time the offline detection recipe stage by stage and print its figures as a table.

    .venv/bin/python benchmarks/detection.py [RECIPE] [--out DIR] [--dataset URL]
        [--real ../shared/real-faces-dev] [--min-share 0.05] [--set train.input_size=128 ...] [--reuse]

`--dataset s3://BUCKET/NAME` keeps the dataset in object storage (the recipe's `dataset:`), with
an empty media cache in OUT/cache, as on a fresh machine.
`--real PATH` measures the int8 student and its teacher on labelled real photos (the recipe's
`evaluate.real`; never trained on); without it, or when PATH is absent, that part is skipped and
the table says so. `--set` changes a recipe field for a design comparison; `--reuse` keeps OUT, so
the stages that the change leaves alone are found, not redone (their times are then not a fresh run's).

Targets (issues 3 and 11): FOMO int8 <= 100 KB flash at 96x96, TFLite Micro arena <= 256 KB; on real
photos the student keeps >= 80% of its teacher's F1, with <= 0.1 false alarms per photo with no face.
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
from flows.runs import RunPaths
from figures import bundle_rows, print_figures, with_face_free  # benchmarks/figures.py

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "faces.yaml"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmark-detection"))
    parser.add_argument("--dataset", help="where the dataset lives (default: OUT/dataset); must not exist yet")
    parser.add_argument("--real", help="labelled real photos to measure on (never trained on)")
    parser.add_argument("--min-share", type=float, default=0.05,
                        help="faces smaller than this share of a photo's shorter side are not asked for")
    parser.add_argument("--face-free", nargs="*", default=[], metavar="DIR",
                        help="folders of real photos with no face, added to --real for false alarms "
                             "(benchmarks/face_free_photos.py makes one)")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="recipe changes, e.g. train.input_size=128 compositing.scale=[0.04,0.4]")
    parser.add_argument("--reuse", action="store_true", help="keep OUT: stages the changes leave alone are reused")
    args = parser.parse_args()
    recipe = with_changes(load_recipe(args.recipe), args.set)
    real_note = "no --real PATH given"
    if args.real and Path(args.real).exists():
        real = with_face_free(args.real, args.face_free, recipe.class_names, args.min_share, Path(args.out))
        recipe = recipe.model_copy(update={"evaluate": recipe.evaluate.model_copy(
            update={"real": str(real), "min_share": args.min_share})})
    elif args.real:
        real_note = f"{args.real} is absent"
    if args.dataset:
        recipe = recipe.model_copy(update={"dataset": args.dataset})
        os.environ["EDGEDISTILL_CACHE"] = str(Path(args.out) / "cache")
    paths = RunPaths.of(recipe, args.out)
    if paths.out.exists() and not args.reuse:
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
        ("float F1, held-out composites", f1(trained.held_out["composites"]), ""),
        ("float F1, held-out real photos vs teacher", f1(trained.held_out["photos"]), ""),
        ("int8 F1, all held-out images", f"{manifest.metrics['int8'].get('f1', 0):.3f}", ""),
        ("training", f"{trained.epochs_run} epochs (best {trained.best_epoch}), {trained.seconds:.0f} s", ""),
        ("score threshold (best F1 on validation)", f"{manifest.input.frontend['heatmap']['threshold']}", ""),
        *real_rows(manifest.metrics.get("real"), real_note),
        *bundle_rows(manifest, "<= 100 KB", "<= 256 KB"),
    ])


def real_rows(real: dict | None, note: str) -> list[tuple[str, str, str]]:
    if not real:
        return [("real photos", f"skipped: {note}", "")]
    student, teacher = real["student"], real.get("teacher") or {}

    def figures(metrics: dict) -> str:
        if not metrics:
            return "n/a"
        return (f"F1 {metrics['f1']:.3f} (P {metrics['precision'] or 0:.2f}, R {metrics['recall'] or 0:.2f}; "
                f"{metrics['tp']} found, {metrics['fp']} false alarms)")

    rows = [(f"real photos ({student['photos']}, {student['objects']} faces >= {real['min_share']:.0%})", "", ""),
            ("  student int8", figures(student), ""), ("  teacher", figures(teacher), "")]
    if real.get("student_to_teacher_f1") is not None:
        rows.append(("  student / teacher F1", f"{real['student_to_teacher_f1']:.0%}", ">= 80%"))
    if student["empty_photos"]:
        rows.append((f"  false alarms per photo with no face ({student['empty_photos']})",
                     f"{student['false_alarms_per_empty_photo']:.2f}", "<= 0.1"))
    return rows


def with_changes(recipe, changes: list[str]):
    """The recipe with `field.sub=value` changes (values in YAML), validated as a recipe file is."""
    import yaml

    from edgedistill.recipe import parse_recipe

    data = recipe.model_dump(mode="json")
    for change in changes:
        path, _, value = change.partition("=")
        *parents, leaf = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = yaml.safe_load(value)
    return parse_recipe(data, "the recipe with --set changes")

if __name__ == "__main__":
    main()
