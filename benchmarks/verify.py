"""The vision-language verifier's figures: verdicts against a known truth, requests and cost per 1,000
labels, and the cache hit rate of a rerun.

    .venv/bin/python benchmarks/verify.py                 # the loopback test server, scripted answers
    .venv/bin/python benchmarks/verify.py --images 200 --boxes 4 --concurrency 8

The images are random pictures with K auto-labelled boxes each; the truth says, box by box, whether
the box is right, another class, or empty. The test server (tests/openai_server.py) answers with that
truth through the real `openai` client, so the table measures the verifier's bookkeeping (verdicts
applied to the right boxes, caching, budget, cost accounting) and its overhead per request, not a
model's judgement: that needs a real model and labelled photos.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgedistill.dataset import Dataset, ImageShape, Label, LabelSource, OntologyClass, Provenance, Sample
from edgedistill.images import image_bytes
from edgedistill.recipe import DetectionClass, VerifySettings
from labelers.verifier import VerifyLabeler, verify_labels

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from openai_server import KEY, OpenAiServer  # noqa: E402  (the loopback OpenAI-compatible server)

ONTOLOGY = {"cat": DetectionClass(prompts=["a cat"]), "dog": DetectionClass(prompts=["a dog"])}
OUTCOMES = ("accept", "relabel", "reject")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--boxes", type=int, default=3, help="auto-labelled boxes per image")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    truth: dict[tuple[int, int], str] = {}
    with tempfile.TemporaryDirectory() as folder:
        dataset = Dataset.create(Path(folder) / "pets", "pets", "detection", [OntologyClass(name=n) for n in ONTOLOGY])
        samples = []
        for index in range(args.images):
            digest, media = dataset.add_media(image_bytes(rng.integers(0, 255, (240, 320, 3), np.uint8)), "png")
            labels = []
            for box in range(args.boxes):
                corner = (index % 200 + 1, 30 * box + 1)  # unique per image and box: the server's key
                truth[corner] = OUTCOMES[int(rng.integers(3))]
                labels.append(Label(class_name="cat", box=(*corner, 40, 40), score=0.5,
                                    source=LabelSource(labeler="owlv2")))
            samples.append(Sample(id=digest[:16], media=media, kind="image", shape=ImageShape(width=320, height=240),
                                  provenance=Provenance(source="photos"), labels=labels))

        def answer(class_name: str, box: tuple[int, int, int, int]) -> dict:
            verdict = truth[box[:2]]
            return {"verdict": verdict, "class_name": "dog" if verdict == "relabel" else class_name, "reason": "truth"}

        os.environ["OPENAI_API_KEY"] = KEY
        with OpenAiServer(answer) as server:
            settings = VerifySettings(enabled=True, base_url=server.url, concurrency=args.concurrency)
            started = time.perf_counter()
            result, report = verify_labels(dataset, samples, ONTOLOGY, settings, Path(folder) / "first")
            seconds = time.perf_counter() - started
            started = time.perf_counter()
            _, rerun = verify_labels(dataset, samples, ONTOLOGY, settings, Path(folder) / "rerun")
            rerun_seconds = time.perf_counter() - started
            most_in, most_out = VerifyLabeler(ONTOLOGY, settings).most_tokens(samples[0])

    said = {"accept": "accepted", "relabel": "relabelled", "reject": "rejected"}
    labels = [label for sample in result for label in sample.labels]
    agree = sum(said[truth[(round(label.box[0]), round(label.box[1]))]] == label.verdict.outcome for label in labels)
    usage, again = report["api_usage"]["verify"], rerun["api_usage"]["verify"]
    per_thousand = 1000 / len(labels)
    table = Table(title=f"verifier on {args.images} images x {args.boxes} boxes (loopback server, scripted truth)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for row in [
        ("labels accepted / relabelled / rejected", " / ".join(str(report["labels"][k]) for k in said.values())),
        ("verdicts that match the truth", f"{agree} of {len(labels)} ({agree / len(labels):.1%})"),
        ("requests per 1,000 labels", f"{usage['asked'] * per_thousand:.0f}"),
        ("tokens in / out per 1,000 labels (server's count)",
         f"{usage['input_tokens'] * per_thousand:.0f} / {usage['output_tokens'] * per_thousand:.0f}"),
        ("estimated cost per 1,000 labels (gpt-4o-mini prices)", f"${usage['cost'] * per_thousand:.4f}"),
        ("the budget's plan: at most tokens in / out per request", f"{most_in} / {most_out}"),
        ("at most, per 1,000 labels (gpt-4o-mini prices)",
         f"${usage['asked'] * per_thousand * (most_in * 0.15 + most_out * 0.60) / 1e6:.3f}"),
        ("first run: images per second", f"{args.images / seconds:.1f}"),
        ("rerun: answered from cache", f"{again['from_cache']} of {args.images} "
                                       f"({again['from_cache'] / args.images:.0%}), {again['asked']} asked"),
        ("rerun: images per second", f"{args.images / rerun_seconds:.1f}"),
    ]:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()
