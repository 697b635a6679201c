"""The team's own photos as unlabelled samples: every image in a folder (local, or an fsspec URL
such as s3://bucket/site-photos), decoded upright.

Each file is decoded with `decode_image` (EXIF rotation, CMYK, palette and 16-bit handled),
downscaled to at most MAX_SIDE pixels on its long side and re-encoded as JPEG. Files that cannot
be read are skipped and listed in one warning; a folder with no readable image is an error.
The work runs in resumable shards (edgedistill/shards.py), so a rerun after a crash goes on.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edgedistill.dataset import Dataset, ImageShape, Provenance, Sample, Store
from edgedistill.errors import EdgedistillError
from edgedistill.images import IMAGE_SUFFIXES, decode_image, image_bytes
from edgedistill.shards import ShardOutput, run_shards

logger = logging.getLogger(__name__)

MAX_SIDE = 2048  # longer sides are downscaled: detectors see a few hundred pixels anyway
SHARD_SIZE = 32


@dataclass(frozen=True)
class PhotoJob:
    relative: str  # path under the folder, with forward slashes: the sample's group
    size: int  # bytes and modification time (or ETag): a changed file must not reuse an old shard
    stamp: str


@dataclass(frozen=True)
class _ShardSettings:
    dataset: str  # its location
    folder: str  # a local folder or an fsspec URL


def find_photos(folder: str | Path) -> list[PhotoJob]:
    """Every file with an image suffix under `folder`, in a stable order."""
    store = Store(folder)
    if not store.is_folder():
        raise EdgedistillError(f"photo folder {folder} does not exist", "check `images:` in the recipe")
    return [PhotoJob(relative, details["size"], str(details.get("ETag") or details.get("mtime")))
            for relative, details in sorted(store.files().items())
            if Path(relative).suffix.lower() in IMAGE_SUFFIXES]


def photos_fingerprint(folder: str | Path) -> str:
    """Changes when a photo in the folder is added, removed or rewritten: the photos stage reruns."""
    return hashlib.sha256(repr(find_photos(folder)).encode()).hexdigest()[:16]


def downscale(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    scale = max_side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _photo_sample(dataset: Dataset, folder: Store, job: PhotoJob) -> Sample:
    data = folder.read(job.relative)
    if data is None:
        raise EdgedistillError(f"{job.relative} was removed after the folder was listed")
    original = decode_image(data, name=job.relative)
    image = downscale(original)
    digest, relative = dataset.add_media(image_bytes(image, "JPEG"), "jpg")
    params = {"file": job.relative, "original_size": [original.shape[1], original.shape[0]],
              "downscaled": image.shape != original.shape}
    return Sample(id=digest[:16], media=relative, kind="image",
                  shape=ImageShape(width=image.shape[1], height=image.shape[0]),
                  provenance=Provenance(source="photos", params=params, group=job.relative))


def ingest_shard(settings: _ShardSettings, jobs: list[PhotoJob]) -> ShardOutput:
    """Decode and store a shard of photos (runs in a worker process)."""
    folder = Store(settings.folder)
    output = ShardOutput()
    with Dataset.open(settings.dataset).parallel_media_writes() as dataset:
        for job in jobs:
            try:
                output.samples.append(_photo_sample(dataset, folder, job))
            except EdgedistillError as error:
                output.failures.append({"file": job.relative, "error": error.problem})
            except OSError as error:  # unreadable on disk (permissions) since it was listed
                output.failures.append({"file": job.relative, "error": str(error)})
    return output


def _unique(samples: list[Sample]) -> tuple[list[Sample], list[str]]:
    """Keep the first of byte-identical photos; return the files of the others."""
    seen: set[str] = set()
    kept, duplicates = [], []
    for sample in samples:
        if sample.id in seen:
            duplicates.append(sample.provenance.params["file"])
        else:
            seen.add(sample.id)
            kept.append(sample)
    return kept, duplicates


def known_photos(listing: list[list], samples: list[Sample]) -> dict[PhotoJob, Sample]:
    """The photos an earlier run read, as it listed them (`Photos.listing`), with the samples it made of them."""
    by_file = {s.provenance.params["file"]: s for s in samples if s.provenance.source == "photos"}
    return {job: by_file[job.relative] for job in (PhotoJob(*entry) for entry in listing) if job.relative in by_file}


@dataclass
class Photos:
    samples: list[Sample]
    listing: list[list]  # [file, size, stamp] of each photo found: what the next run tells new photos by


def ingest_photos(dataset: Dataset, folder: str | Path, work_dir: Path,
                  progress: Callable[[int, int], None] | None = None, workers: int | None = None,
                  known: dict[PhotoJob, Sample] | None = None) -> Photos:
    """Every readable image under `folder` as an unlabelled sample of `dataset` (the caller commits). Photos
    in `known` (unchanged since an earlier run read them) keep their samples and are not read again."""
    jobs = find_photos(folder)
    if not jobs:
        raise EdgedistillError(f"{folder} holds no images",
                               f"put photos with one of these suffixes in it: {' '.join(IMAGE_SUFFIXES)}")
    known = known or {}
    fresh = [job for job in jobs if job not in known]
    shards = max(1, -(-len(fresh) // SHARD_SIZE))
    run = run_shards(fresh, functools.partial(ingest_shard, _ShardSettings(dataset.location, str(folder))),
                     Path(work_dir), SHARD_SIZE, min(workers or os.cpu_count() or 1, shards), progress)
    failures = [f for output in run.outputs for f in output.failures]
    made = {s.provenance.params["file"]: s for output in run.outputs for s in output.samples}
    samples, duplicates = _unique([found for job in jobs
                                   if (found := known.get(job) or made.get(job.relative)) is not None])
    if failures:
        listing = "\n  ".join(f"{f['file']}: {f['error']}" for f in failures)
        logger.warning("skipped %d of %d photos that could not be read:\n  %s", len(failures), len(jobs), listing)
    if duplicates:
        logger.warning("%d photos are byte-identical copies of others and were kept once: %s",
                       len(duplicates), ", ".join(duplicates[:10]))
    if not samples:
        raise EdgedistillError(f"none of the {len(jobs)} images in {folder} could be read",
                               "check that they are JPEG, PNG, BMP, WEBP or TIFF files and not damaged")
    return Photos(samples, [[job.relative, job.size, job.stamp] for job in jobs])
