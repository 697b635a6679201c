"""Text-to-image with diffusers: unlabelled pictures of the ontology's classes, seeds recorded.

Prompts come from the ontology, each varied by scene, lighting and viewpoint; every image has its
own seed (drawn from the recipe's), so an image can be made again on its own. The model is
`recipe.diffusion.model`: a local folder or a hub id, never downloaded when HF_HUB_OFFLINE=1.
Needs the optional `diffusion` extra (diffusers). The images carry no labels: the auto-labeler
labels them like any photo.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgedistill.dataset import Dataset, ImageShape, Provenance, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.images import image_bytes
from edgedistill.models import default_device, model_source, model_unavailable
from edgedistill.recipe import DetectionRecipe, DiffusionSettings
from edgedistill.shards import ShardOutput, run_shards

logger = logging.getLogger(__name__)

SCENES = ("on a construction site", "in a warehouse", "in an office", "on a city street", "in a park",
          "in a kitchen", "on a wooden table", "in a factory hall", "in a living room", "in a parking lot",
          "in a field", "in a workshop")
LIGHTING = ("in daylight", "on an overcast day", "at dusk", "under fluorescent light", "in harsh sunlight",
            "in dim light", "with backlight", "under warm indoor light")
VIEWPOINTS = ("seen from the front", "seen from above", "seen from a low angle", "close-up", "from a distance",
              "seen from the side")
QUALITY_NEGATIVE = "blurry, low quality, drawing, cartoon, text, watermark"
SETTING = "diffusion.model"  # the recipe field that names the model
FEW_STEP_LIMIT = 4  # turbo/LCM models run in so few steps, and without classifier-free guidance


@dataclass(frozen=True)
class DiffusionJob:
    index: int
    class_name: str
    prompt: str
    negative_prompt: str
    seed: int


@dataclass(frozen=True)
class _GenerationSettings:
    model: str
    steps: int
    guidance_scale: float
    width: int
    height: int


def _with_article(prompt: str) -> str:
    first = prompt.split()[0].casefold() if prompt.split() else ""
    if first in ("a", "an", "the", "some") or prompt.endswith("s"):
        return prompt
    return f"{'an' if first[:1] in 'aeiou' else 'a'} {prompt}"


def _variations(prompts: list[str], rng: np.random.Generator) -> list[tuple[str, str, str, str]]:
    """Every (prompt, scene, light, viewpoint) of a class in a seeded order, so none repeats early."""
    combos = list(itertools.product(prompts, SCENES, LIGHTING, VIEWPOINTS))
    return [combos[i] for i in rng.permutation(len(combos))]


def plan_prompts(recipe: DetectionRecipe, count: int) -> list[DiffusionJob]:
    """`count` prompts (diffusion's, or the image API's): classes in turn, each through its prompts varied
    by scene, light and viewpoint; the class's negative prompts say what not to draw."""
    rng = np.random.default_rng(recipe.seed)
    names = recipe.class_names
    variations = {name: _variations(recipe.classes[name].prompts, rng) for name in names}
    jobs = []
    for index in range(count):
        name = names[index % len(names)]
        options = variations[name]
        prompt, scene, light, view = options[(index // len(names)) % len(options)]
        text = f"a photo of {_with_article(prompt)} {scene}, {view}, {light}"
        negative = ", ".join([*recipe.classes[name].negative_prompts, QUALITY_NEGATIVE])
        jobs.append(DiffusionJob(index, name, text, negative, int(rng.integers(2**31))))
    return jobs


def default_guidance(settings: DiffusionSettings) -> float:
    """No classifier-free guidance for few-step (turbo) models, the usual 7.5 otherwise."""
    return 0.0 if settings.steps <= FEW_STEP_LIMIT else 7.5


# -- the model ---------------------------------------------------------------------------------

def load_text_to_image(model: str, device: str | None = None) -> Any:
    """A diffusers text-to-image pipeline from a local folder or a hub id (cache only when offline)."""
    try:
        import torch
        from diffusers import AutoPipelineForText2Image
    except ImportError:
        raise EdgedistillError("text-to-image needs diffusers, which is not installed",
                               "pip install 'edgedistill[diffusion]'") from None
    device = device or default_device()
    source, local_only = model_source(model, SETTING)
    try:
        pipeline = AutoPipelineForText2Image.from_pretrained(
            source, dtype=torch.float16 if device == "cuda" else torch.float32, local_files_only=local_only)
    except (OSError, ValueError, KeyError) as error:
        raise model_unavailable(model, SETTING, str(error).splitlines()[0] if str(error) else type(error).__name__
                                ) from None
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


class _LazyPipeline:
    """Loads the model the first time a shard needs it, so a fully resumed run never loads it."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._pipeline: Any = None

    def get(self) -> Any:
        if self._pipeline is None:
            self._pipeline = load_text_to_image(self.model)
        return self._pipeline


# -- generation --------------------------------------------------------------------------------

def _run_batch(pipeline: Any, jobs: list[DiffusionJob], settings: _GenerationSettings) -> tuple[np.ndarray, list[bool]]:
    import torch

    # one CPU generator per image: each image depends on its own seed only, whatever the batch
    generators = [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]
    try:
        output = pipeline(prompt=[j.prompt for j in jobs], negative_prompt=[j.negative_prompt for j in jobs],
                          num_inference_steps=settings.steps, guidance_scale=settings.guidance_scale,
                          width=settings.width, height=settings.height, generator=generators, output_type="np")
    except torch.OutOfMemoryError:
        raise EdgedistillError("the diffusion model ran out of memory",
                               "lower `diffusion.batch_size` or `diffusion.image_size`") from None
    flagged = getattr(output, "nsfw_content_detected", None) or [False] * len(jobs)
    images = (np.clip(np.asarray(output.images), 0, 1) * 255).round().astype(np.uint8)
    return images, [bool(f) for f in flagged]


def _sample(dataset: Dataset, job: DiffusionJob, image: np.ndarray, settings: _GenerationSettings) -> Sample:
    digest, relative = dataset.add_media(image_bytes(image, "JPEG"), "jpg")
    params = {"prompt": job.prompt, "negative_prompt": job.negative_prompt, "class": job.class_name,
              "model": settings.model, "steps": settings.steps, "guidance_scale": settings.guidance_scale,
              "index": job.index}
    return Sample(id=digest[:16], media=relative, kind="image",
                  shape=ImageShape(width=image.shape[1], height=image.shape[0]),
                  # images of one prompt look alike: they share a split, so test prompts are unseen
                  provenance=Provenance(source="diffusion", params=params, seed=job.seed, group=f"prompt:{job.prompt}"))


def generate_shard(pipeline: _LazyPipeline, settings: _GenerationSettings, dataset: Dataset, batch_size: int,
                   jobs: list[DiffusionJob]) -> ShardOutput:
    output = ShardOutput()
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        images, flagged = _run_batch(pipeline.get(), batch, settings)
        for job, image, unsafe in zip(batch, images, flagged):
            if unsafe:  # the model's safety checker blacked it out
                output.failures.append({"index": job.index, "prompt": job.prompt, "error": "flagged by safety checker"})
            else:
                output.samples.append(_sample(dataset, job, image, settings))
    return output


def generate_images(dataset: Dataset, recipe: DetectionRecipe, work_dir: Path,
                    progress: Callable[[int, int], None] | None = None,
                    guidance_scale: float | None = None) -> list[Sample]:
    """Make `recipe.diffusion.images` unlabelled images into `dataset` (the caller commits).

    Runs in this process (the model is loaded once); finished shards in `work_dir` are kept, so
    a rerun makes only what is missing.
    """
    settings_in = recipe.diffusion
    width, height = settings_in.image_size
    if width % 8 or height % 8:
        raise EdgedistillError(f"diffusion.image_size {width}x{height} is not a multiple of 8",
                               "use sizes such as 512x512 or 768x512")
    guidance = default_guidance(settings_in) if guidance_scale is None else guidance_scale
    settings = _GenerationSettings(settings_in.model, settings_in.steps, guidance, width, height)
    jobs = plan_prompts(recipe, settings_in.images)
    if not jobs:
        return []
    # the model and the generation settings are part of the plan: a change must not reuse shards
    key = hashlib.sha256(repr((settings, settings_in.batch_size)).encode()).hexdigest()[:12]
    work = Path(work_dir) / key
    run = run_shards(jobs, functools.partial(generate_shard, _LazyPipeline(settings.model), settings, dataset,
                                             settings_in.batch_size),
                     work, max(8, settings_in.batch_size * 4), workers=1, progress=progress,
                     keep_here=True)
    failures = [f for output in run.outputs for f in output.failures]
    if failures:
        logger.warning("%d of %d generated images were dropped: %s", len(failures), len(jobs),
                       "; ".join(f"#{f['index']} {f['error']}" for f in failures[:5]))
    seen: set[str] = set()
    return [s for output in run.outputs for s in output.samples if not (s.id in seen or seen.add(s.id))]
