"""Images from an OpenAI-compatible image endpoint (`/images/generations`): one more unlabelled image
source beside the team's photos and diffusion, from the same prompts as diffusion (the ontology's,
varied by scene, light and viewpoint). The auto-labeler labels them like any photo.

Every image is cached in the dataset by its request (edgedistill/openai_api.py), so a rerun or a
resumed run asks nothing twice; the budget (image_api.max_requests, max_cost) is planned before any
request, and the images it does not reach are left unmade and counted in the report.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgedistill.dataset import Dataset, ImageShape, Provenance, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.images import decode_image
from edgedistill.openai_api import IMAGES, ApiClient
from edgedistill.recipe import DetectionRecipe, ImageApiSettings
from edgedistill.shards import ShardOutput, run_shards
from generators.diffusion import DiffusionJob, plan_prompts

SHARD_SIZE = 8


@dataclass(frozen=True)
class _Settings:
    api: ImageApiSettings
    dataset: str  # its location


def request_of(job: DiffusionJob, settings: ImageApiSettings) -> dict[str, Any]:
    """What is asked for one image (the API has no negative prompt: what not to draw goes in the text); the
    job's seed is the variant that tells images of one prompt apart."""
    prompt = f"{job.prompt}. Not: {job.negative_prompt}." if job.negative_prompt else job.prompt
    request = {"prompt": prompt, "size": settings.size, "variant": job.seed}
    return request | ({"quality": settings.quality} if settings.quality else {})


def generate_shard(settings: _Settings, jobs: list[DiffusionJob]) -> ShardOutput:
    client, dataset = ApiClient(settings.api), Dataset.open(settings.dataset)

    def make(job: DiffusionJob) -> Sample | dict[str, Any]:
        encoded, _ = client.image(dataset.store, request_of(job, settings.api))
        try:
            image = decode_image(encoded, f"the server's image {job.index}")
        except EdgedistillError as error:
            return {"index": job.index, "prompt": job.prompt, "error": error.problem}
        digest, relative = dataset.add_media(encoded, _extension(encoded))
        params = {"prompt": job.prompt, "class": job.class_name, "model": settings.api.model, "index": job.index,
                  "size": settings.api.size, "quality": settings.api.quality}
        return Sample(id=digest[:16], media=relative, kind="image",
                      shape=ImageShape(width=image.shape[1], height=image.shape[0]),
                      # images of one prompt look alike: they share a split, so test prompts are unseen
                      provenance=Provenance(source="image-api", params=params, seed=job.seed,
                                            group=f"prompt:{job.prompt}"))

    made = client.map(make, jobs)
    return ShardOutput([m for m in made if isinstance(m, Sample)], [m for m in made if not isinstance(m, Sample)])


def _extension(encoded: bytes) -> str:
    return "png" if encoded.startswith(b"\x89PNG") else "webp" if encoded[8:12] == b"WEBP" else "jpg"


def generate_api_images(dataset: Dataset, recipe: DetectionRecipe, work_dir: Path,
                        progress: Callable[[int, int], None] | None = None) -> tuple[list[Sample], dict[str, Any]]:
    """`image_api.images` unlabelled images into `dataset` (the caller commits), as far as the budget goes,
    and a report: images made, left unmade, failures, requests and cost."""
    settings = recipe.image_api
    client = ApiClient(settings)  # a missing key is an error before any work
    jobs = plan_prompts(recipe, settings.images)
    requests = [request_of(job, settings) for job in jobs]
    plan = client.budgeted(dataset.store, IMAGES, requests, [(1, 0)] * len(jobs))  # priced by the image
    run = run_shards([job for i, job in enumerate(jobs) if i in plan.chosen],
                     functools.partial(generate_shard, _Settings(settings, dataset.location)), Path(work_dir),
                     SHARD_SIZE, workers=1, progress=progress)
    samples = [s for output in run.outputs for s in output.samples]
    failures = [f for output in run.outputs for f in output.failures]
    usage = client.spent(dataset.store, IMAGES, requests, plan)
    seen: set[str] = set()
    unique = [s for s in samples if not (s.id in seen or seen.add(s.id))]
    return unique, {"model": settings.model, "images": len(unique), "left_unmade": len(plan.left),
                    "failures": failures, "api_usage": {"image_api": usage.as_dict()}}
