"""What each voice and augmentation lever buys on real speech (issue 10 §2), printed as a table.

    .venv/bin/python benchmarks/speech_levers.py [RECIPE] --out RUN [--epochs N] [--only NAME ...] [--real PATH]

Needs a finished run of RECIPE in RUN (`edgedistill run RECIPE --out RUN`): its Whisper-checked version
is the starting point. One DS-CNN is trained per lever, with the recipe's training settings:
- the recipe as it is, and again with another seed (the spread between the two is the noise floor);
- each speech engine left out of the training clips, espeak-ng's speaker variants left out, every other
  engine's voices counted four times, carrier phrases left out (the same split, other training clips);
- each augmentation trick switched off (a new augment version of the same split).
Every model is scored in float on the recipe's own synthetic test clips and, top class per clip as the
model card scores them, on the real recordings (default ../shared/real-speech-dev; never trained on).
Models and figures are kept under RUN/levers, so a rerun only trains what is missing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgedistill.dataset import Dataset, Sample
from edgedistill.inference import softmax
from edgedistill.metrics import classification_metrics
from edgedistill.real_speech import evaluate_on_real, read_labelled_clips
from edgedistill.recipe import KeywordSpottingRecipe, is_keyword, load_recipe
from flows.keyword_spotting import frontend_for, open_dataset, split_step, training_set_step
from flows.runs import RunPaths, newest
from real_speech import DEFAULT_REAL  # benchmarks/real_speech.py
from trainers.keyword_spotter import (FeatureSet, clip_features, load_model, negative_kind, predict_logits,
                                      save_model, train_keyword_spotter)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Lever:
    name: str
    change: str  # what differs from the recipe, in words
    # how many times a training clip counts (0: left out), from the synthesis params of the clip's origin
    repeats: Callable[[dict], int] | None = None
    augment: dict = field(default_factory=dict)  # augment settings changed
    seed: int | None = None  # another training seed


def _engine(origin: dict) -> str:
    voice = origin.get("voice") or ""
    return voice.split("/", 1)[0]


def levers(engines: list[str]) -> list[Lever]:
    return [
        Lever("recipe", "as the recipe says"),
        Lever("seed 1", "training seed 1 (the noise floor)", seed=1),
        *[Lever(f"no {engine}", f"{engine} voices left out of training", repeats=lambda o, e=engine: int(_engine(o) != e))
          for engine in engines],
        Lever("no espeak variants", "espeak-ng speaker variants (+m1, +f2, +croak...) left out",
              repeats=lambda o: int(not (_engine(o) == "espeak-ng" and "+" in o["voice"]))),
        Lever("other engines x4", "every voice not from espeak-ng counts four times",
              repeats=lambda o: 4 if _engine(o) not in ("", "espeak-ng") else 1),
        Lever("no carriers", "keywords said inside carrier phrases left out", repeats=lambda o: int(not o.get("carrier"))),
        Lever("no vocal tract", "vocal tract length warping off", augment={"vocal_tract_probability": 0.0}),
        Lever("no real noise", "only coloured noise and babble", augment={"real_noise_share": 0.0}),
        Lever("no reverb", "room reverberation off", augment={"reverb_probability": 0.0}),
        Lever("no channel", "telephone band and low sample rate off", augment={"channel_probability": 0.0}),
        Lever("no speed/pitch", "speed and pitch change off", augment={"speed_range": (1.0, 1.0)}),
        Lever("no copies", "no augmented copies, clean clips only", augment={"copies": 0}),
    ]


def _origins(dataset: Dataset, split_version: str) -> dict[str, dict]:
    """Sample id -> the synthesis params it came from (an augmented copy's are its parent's)."""
    return {s.id: s.provenance.params for s in dataset.samples(split_version)}


def _origin(sample: Sample, origins: dict[str, dict]) -> dict:
    return origins.get(sample.provenance.params.get("parent", sample.id), sample.provenance.params)


def _train(train: FeatureSet, val: FeatureSet, labels: list[str], settings, folder: Path) -> int:
    """Train one lever's model into `folder` (resumable there); its best epoch."""
    torch.set_num_threads(1)  # one model per core
    result = train_keyword_spotter(train, val, labels, settings, folder / "checkpoints")
    save_model(result.model, folder / "model.pt", labels, settings)
    return result.best_epoch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("recipe", nargs="?", default=str(ROOT / "recipes" / "digits.yaml"))
    parser.add_argument("--out", required=True, help="the folder of a finished `edgedistill run` of the recipe")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="real recordings to measure on")
    parser.add_argument("--only", nargs="*", help="lever names to train (default: all)")
    parser.add_argument("--workers", type=int, default=2, help="models trained at once")
    parser.add_argument("--epochs", type=int, help="train each model this many epochs (default: the recipe's)")
    args = parser.parse_args()
    if not args.real.exists():
        print(f"no real recordings at {args.real}: this benchmark compares levers on real speech, so it stops here "
              "(pass --real PATH)")
        return
    recipe: KeywordSpottingRecipe = load_recipe(args.recipe)
    paths = RunPaths.of(recipe, args.out)
    dataset = open_dataset(recipe, paths.dataset)
    checked = newest(dataset, "review", "whisper_check")
    split = split_step(recipe, dataset, checked)
    origins = _origins(dataset, split.id)
    labels, frontend = recipe.classes, frontend_for(recipe)
    engines = sorted({_engine(o) for o in origins.values()} - {""})
    chosen = [lever for lever in levers(engines) if not args.only or lever.name in args.only]
    real_clips = read_labelled_clips(args.real)
    out = Path(args.out) / "levers" / f"epochs-{args.epochs or recipe.train.epochs}"
    out.mkdir(parents=True, exist_ok=True)

    # every lever is chosen on the recipe's validation clips and scored on its test clips
    baseline = dataset.samples(training_set_step(recipe, dataset, checked).id)
    val = clip_features(dataset, [s for s in baseline if s.split == "val"], frontend, labels)
    test = clip_features(dataset, [s for s in baseline if s.split == "test"], frontend, labels)
    test_unknown = np.array([negative_kind(s) not in (None, "silence") for s in baseline if s.split == "test"])
    test_keyword = np.array([is_keyword(labels[t]) for t in test.targets])
    results: dict[str, dict] = {}
    pending, features = {}, {}
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for lever in chosen:
            figures_file = out / f"{lever.name.replace(' ', '_').replace('/', '_')}.json"
            if figures_file.exists():
                results[lever.name] = json.loads(figures_file.read_text())
                continue
            variant = recipe.model_copy(update={"augment": recipe.augment.model_copy(update=lever.augment)})
            version = training_set_step(variant, dataset, checked).id
            if version not in features:  # levers that only leave clips out share their version's features
                train_samples = [s for s in dataset.samples(version) if s.split == "train"]
                features[version] = train_samples, clip_features(dataset, train_samples, frontend, labels)
            train_samples, train = features[version]
            if lever.repeats:
                kept = np.repeat(np.arange(len(train)), [lever.repeats(_origin(s, origins)) for s in train_samples])
                train = FeatureSet(train.features[kept], train.targets[kept])
            settings = recipe.train.model_copy(update={"epochs": args.epochs or recipe.train.epochs,
                                                       "seed": recipe.train.seed if lever.seed is None else lever.seed})
            print(f"{lever.name}: {len(train)} training clips", flush=True)
            pending[lever.name] = (lever, figures_file, len(train), pool.submit(_train, train, val, labels, settings,
                                                                     out / figures_file.stem))
        for lever, figures_file, train_clips, future in pending.values():
            best_epoch = future.result()
            model, _ = load_model(out / figures_file.stem / "model.pt")
            predicted = predict_logits(model, test.features).argmax(axis=1)
            real = evaluate_on_real(real_clips, labels, frontend, lambda x: softmax(predict_logits(model, x)), None)
            figures = {
                "change": lever.change, "train_clips": train_clips, "best_epoch": best_epoch,
                "synthetic_accuracy": classification_metrics(test.targets, predicted, labels)["accuracy"],
                "synthetic_keyword_recall": float(np.mean(predicted[test_keyword] == test.targets[test_keyword])),
                "synthetic_unknown_rejected": float(np.mean([not is_keyword(labels[p]) for p in predicted[test_unknown]])),
                "real_keyword_accuracy": real["keyword_accuracy"], "real_other_rejected": real["non_keyword_rejected"],
            }
            figures_file.write_text(json.dumps(figures, indent=1))
            results[lever.name] = figures
            print(f"{lever.name}: real keywords {figures['real_keyword_accuracy']:.1%}, "
                  f"real other words rejected {figures['real_other_rejected']:.1%}", flush=True)
    _print_table({lever.name: results[lever.name] for lever in chosen}, len(real_clips))


def _print_table(results: dict[str, dict], real_clips: int) -> None:
    base = results.get("recipe")
    columns = [("synthetic_keyword_recall", "synth kw"), ("synthetic_unknown_rejected", "synth unk rej"),
               ("real_keyword_accuracy", "real kw"), ("real_other_rejected", "real other rej")]
    print(f"\nreal recordings: {real_clips} clips; float models, top class per clip; "
          "points against the recipe in brackets")
    print(f"| lever | training clips | {' | '.join(title for _, title in columns)} |")
    print("|---|---:|" + "---:|" * len(columns))
    for name, figures in results.items():
        cells = []
        for key, _ in columns:
            delta = "" if base is None or name == "recipe" else f" ({100 * (figures[key] - base[key]):+.1f})"
            cells.append(f"{figures[key]:.1%}{delta}")
        print(f"| {name} | {figures['train_clips']} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
