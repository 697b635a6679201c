"""Run the default keyword-spotting recipe as `edgedistill run` does and print its figures as a table.

    .venv/bin/python benchmarks/keyword_spotting.py [RECIPE] [--out DIR] [--dask ADDRESS] [--real PATH]

The run is the Prefect flow itself (shards as task runs on its task runner); stage times come from
its task runs. Targets (issue 2): end to end under 20 minutes on 2 cores, int8 model <= 64 KB,
TFLite Micro arena <= 32 KB, int8 accuracy on held-out voices >= 90%. With real recordings (default
../shared/real-speech-dev, skipped when absent) the recipe runs with `evaluate: {real: PATH}` and a
second table sets the real figures beside the synthetic ones (issue 10).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from edgedistill.bundle import load_bundle
from edgedistill.dataset import Dataset
from edgedistill.recipe import load_recipe
from flows.run import one_prefect_server, recipe_flow
from flows.runs import RunPaths, TrainedModel, newest
from figures import bundle_rows, print_figures  # benchmarks/figures.py
from real_speech import DEFAULT_REAL, print_real_table  # benchmarks/real_speech.py

ROOT = Path(__file__).resolve().parents[1]


def stage_seconds(flow_run_id) -> dict[str, float]:
    """Wall time of each stage task of one flow run (its shard tasks run inside it)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs, this_flow = [], FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        while page := client.read_task_runs(flow_run_filter=this_flow, offset=len(runs), limit=200):
            runs += page
    return {run.name.rsplit("-", 1)[0]: (run.end_time - run.start_time).total_seconds()
            for run in runs if run.start_time and run.end_time and "shard" not in run.name}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "digits.yaml"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "benchmark"))
    parser.add_argument("--dask", help="run the shards on this Dask scheduler (or 'local')")
    parser.add_argument("--keep", action="store_true", help="reuse an earlier run (times only what is left)")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="real recordings to measure on")
    args = parser.parse_args()
    if args.real.exists():
        args.recipe = _with_real_evaluation(Path(args.recipe), args.real)
    else:
        print(f"no real recordings at {args.real}: real-speech figures skipped (pass --real PATH)")
    recipe = load_recipe(args.recipe)
    paths = RunPaths.of(recipe, args.out)
    if paths.out.exists() and not args.keep:
        shutil.rmtree(paths.out)
    paths.out.mkdir(parents=True, exist_ok=True)
    with one_prefect_server():
        started = time.perf_counter()
        state = recipe_flow(args.dask)(str(Path(args.recipe).resolve()), str(paths.out.resolve()), return_state=True)
        total = time.perf_counter() - started
        stages = stage_seconds(state.state_details.flow_run_id)
    manifest = load_bundle(state.result())
    dataset = Dataset.open(paths.dataset)
    synthesized, checked = newest(dataset, "synthesize"), newest(dataset, "whisper_check")
    training_set, trained = newest(dataset, "augment"), TrainedModel.load(paths)
    # the train task splits and augments (done when the augmented version was written), then trains
    augmenting = (training_set.created - checked.created).total_seconds()
    times = {"synthesize": stages["generate"], "whisper check": stages["label"], "split + augment": augmenting,
             "train (features, fit, test)": stages["train"] - augmenting, "export": stages["export"]}

    n_synth = synthesized.counts["samples"]
    n_keyword_clips = sum(v for k, v in synthesized.counts.items()
                          if k.startswith("class:") and k not in ("class:_unknown_", "class:_silence_"))
    n_aug = training_set.counts["samples"] - checked.counts["samples"]
    int8 = manifest.metrics["int8"]
    print_figures(f"keyword spotting: {recipe.name}", ("end to end (the whole flow)", total, "< 20 min"), times, [
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
        *bundle_rows(manifest, "<= 64 KB", "<= 32 KB"),
        ("test clips (held-out voices)", str(int8["count"]), ""),
    ])
    if "real" in manifest.metrics:
        print_real_table(f"{recipe.name} on real speech ({args.real})", manifest, manifest.metrics["real"])


def _with_real_evaluation(recipe: Path, real: Path) -> str:
    """A copy of the recipe (in a temporary folder) that measures the bundle on `real`."""
    data = load_recipe(recipe).model_dump(mode="json")
    data["evaluate"]["real"] = str(real.resolve())
    copy = Path(tempfile.mkdtemp(prefix="benchmark-")) / recipe.name
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(copy)

if __name__ == "__main__":
    main()
