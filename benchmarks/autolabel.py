"""Auto-labelling throughput in images per second: batched against one image at a time.

    .venv/bin/python benchmarks/autolabel.py                       # tiny random OWLv2, CPU (offline)
    .venv/bin/python benchmarks/autolabel.py --base-size --images 6 --batch-sizes 1 2   # real size, random
    .venv/bin/python benchmarks/autolabel.py --model google/owlv2-base-patch16-ensemble --images 64
    .venv/bin/python benchmarks/autolabel.py --sam facebook/sam-vit-base   # add Segment Anything rows
    .venv/bin/python benchmarks/autolabel.py --runners --images 96 --batch-sizes 4   # where the shards run

The images are real pictures drawn with PIL and stored in a temporary dataset, so every row
includes decoding, preprocessing, the model and the ontology mapping: what OWL labelling costs
in a flow. `--runners` adds OWL rows for where the shards run: this process, a pool of 2
processes, and a local Dask cluster of 2 workers under a Prefect flow (start-up and model loading
included, as a run pays them). The first batch of each row is a warm-up and is not timed. On a machine with a
GPU the model runs there (CUDA); the table names the device. The BlazeFace teacher row appears
when its weights are present (`python -m labelers.teachers fetch`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table

from edgedistill.dataset import Dataset, ImageShape, Label, LabelSource, MediaPolicy, OntologyClass, Provenance, Sample
from edgedistill.images import image_bytes
from edgedistill.models import default_device
from edgedistill.recipe import AutoLabelSettings, DetectionClass
from edgedistill.labelling import Labeler, run_labeler
from labelers.owl import OwlLabeler, load_owl
from labelers.sam import SamLabeler, load_sam
from labelers.teachers import ADAPTERS, TeacherLabeler, find_packaged

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from tiny_models import save_tiny_owl, save_tiny_sam  # noqa: E402  (random models made like real weights)

ONTOLOGY = {
    "helmet": DetectionClass(prompts=["hard hat", "safety helmet"], negative_prompts=["baseball cap"]),
    "person": DetectionClass(prompts=["person", "worker"]),
}


def picture(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(60, 200, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        size = int(rng.integers(20, max(21, min(width, height) // 3)))
        draw.ellipse([x, y, x + size, y + size], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return np.asarray(image)


def make_dataset(root: Path, count: int, width: int, height: int) -> tuple[Dataset, list[Sample]]:
    ontology = [OntologyClass(name=n, prompts=c.prompts, negative_prompts=c.negative_prompts) for n, c in ONTOLOGY.items()]
    dataset = Dataset.create(root, "bench", "detection", ontology, MediaPolicy(image_size=(width, height)))
    samples = []
    for seed in range(count):
        digest, media = dataset.add_media(image_bytes(picture(width, height, seed), "PNG"), "png")
        box = Label(class_name="person", box=(width * 0.2, height * 0.2, width * 0.4, height * 0.5), score=0.9,
                    source=LabelSource(labeler="bench"))
        samples.append(Sample(id=digest[:16], media=media, kind="image", shape=ImageShape(width=width, height=height),
                              provenance=Provenance(source="bench", seed=seed), labels=[box]))
    return dataset, samples


def labelling(labeler: Labeler, dataset: Dataset):
    return lambda samples, work: run_labeler(labeler, dataset, samples, work)


def images_per_second(run, samples: list[Sample], warmup: int, work: Path) -> float:
    run(samples[:warmup], work / "warmup")  # loads the model, warms caches and kernels
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    run(samples[warmup:], work / "timed")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (len(samples) - warmup) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="OWL hub id or folder (default: a random OWLv2 made here)")
    parser.add_argument("--base-size", action="store_true",
                        help="make the random OWLv2 the size of owlv2-base-patch16 (960 px): real speed, no weights")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=(320, 240), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--sam", help="also time Segment Anything (hub id, folder, or 'tiny')")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--runners", action="store_true", help="also time OWL in a process pool and on Dask")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[tuple[str, str, int, float]] = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = args.model or str(save_tiny_owl(root / "random-owlv2", "owlv2", base_size=args.base_size))
        label = args.model or ("random, owlv2-base size" if args.base_size else "tiny random")
        dataset, samples = make_dataset(root / "dataset", args.images, *args.size)
        kind = load_owl(model).kind
        for batch in args.batch_sizes:
            settings = AutoLabelSettings(model=model, batch_size=batch, threshold=0.1)
            warmup = min(batch, len(samples) - 1)
            speed = images_per_second(labelling(OwlLabeler(ONTOLOGY, settings), dataset), samples, warmup,
                                      root / f"owl-{batch}")
            rows.append((kind, label, batch, speed))
        if args.sam:
            sam = str(save_tiny_sam(root / "tiny-sam")) if args.sam == "tiny" else args.sam
            load_sam(sam)
            for batch in args.batch_sizes:
                speed = images_per_second(labelling(SamLabeler(sam, batch), dataset), samples,
                                          min(batch, len(samples) - 1), root / f"sam-{batch}")
                rows.append(("sam", args.sam, batch, speed))
        if find_packaged(ADAPTERS["blazeface_short_range"].packaged):
            settings = AutoLabelSettings(labeler="teacher", teacher_adapter="blazeface_short_range",
                                         teacher_classes={"face": "person"})
            for batch in sorted({1, max(args.batch_sizes)}):
                settings = settings.model_copy(update={"batch_size": batch})
                speed = images_per_second(labelling(TeacherLabeler(ONTOLOGY, settings), dataset), samples, 1,
                                          root / f"teacher-{batch}")
                rows.append(("teacher", "blazeface_short_range (TFLite)", batch, speed))
        if args.runners:
            settings = AutoLabelSettings(model=model, batch_size=max(args.batch_sizes), threshold=0.1)
            labeler = OwlLabeler(ONTOLOGY, settings)
            labeler.shard_size = settings.batch_size  # enough shards for every worker
            for runner in ("this process", "2 processes", "Dask, 2 workers"):
                speed = runner_speed(runner, labeler, dataset, samples, root / runner)
                rows.append((f"{kind}, {runner}", label, settings.batch_size, speed))
    print_table(rows, args)


def runner_speed(runner: str, labeler: Labeler, dataset: Dataset, samples: list[Sample], work: Path) -> float:
    """Images per second of one whole labelling run, start-up and model loading included. Each worker
    process gets one torch thread: two workers use two cores, as `--threads 2` does here."""
    os.environ["OMP_NUM_THREADS"] = "1"  # read by torch in the worker processes this starts
    started = time.perf_counter()
    if runner == "Dask, 2 workers":
        from prefect import flow
        from prefect_dask import DaskTaskRunner

        from edgedistill.shards import shards_run_by
        from flows.run import prefect_shard_mapper

        @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1}))
        def label() -> None:
            with shards_run_by(prefect_shard_mapper("label")):
                run_labeler(labeler, dataset, samples, work)

        label()
    else:
        run_labeler(labeler, dataset, samples, work, workers=1 if runner == "this process" else 2)
    return len(samples) / (time.perf_counter() - started)


def print_table(rows: list[tuple[str, str, int, float]], args: argparse.Namespace) -> None:
    device = default_device()
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {args.threads} torch thread(s)"
    table = Table(title=f"auto-labelling throughput: {args.images} images {args.size[0]}x{args.size[1]} on {name}")
    for column in ("labeler", "model", "batch", "images/s", "vs batch 1"):
        table.add_column(column, justify="right" if column in ("batch", "images/s", "vs batch 1") else "left")
    single = {(labeler, model): speed for labeler, model, batch, speed in rows if batch == 1}
    for labeler, model, batch, speed in rows:
        base = single.get((labeler, model))
        table.add_row(labeler, model, str(batch), f"{speed:.3g}", f"{speed / base:.2f}x" if base else "")
    Console().print(table)


if __name__ == "__main__":
    main()
