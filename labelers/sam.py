"""Masks from boxes with Segment Anything, stored as COCO RLE.

Each image is encoded once (the heavy ViT, batched over images); all of its boxes then go through
the light prompt encoder and mask decoder together. Boxes are prompts only: they stay as they were.
`model` is a hub id or a local folder for transformers' SamModel (`save_tiny_sam` makes a random
one for offline tests), or a Meta segment-anything checkpoint (.pth, labelers/sam_meta.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgedistill.dataset import Dataset, Label, Sample, write_atomic
from edgedistill.errors import EdgedistillError
from edgedistill.images import load_image
from edgedistill.masks import encode_rle
from edgedistill.boxes import xywh_to_xyxy
from edgedistill.models import default_device, load_config, model_source, model_unavailable
from labelers.sam_meta import MetaSamSegmenter, load_meta_sam

SHARD_SIZE = 32  # samples per resumable shard
SETTING = "autolabel.sam_model"  # the recipe field that names the SAM model
CACHE_VERSION = 1


@dataclass
class SamSegmenter:
    model: Any
    processor: Any
    model_id: str
    device: str

    def segment(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        return segment_boxes(self, images, boxes)


@cache
def load_sam(model: str, device: str | None = None) -> SamSegmenter | MetaSamSegmenter:
    """The Segment Anything model at `model` (hub id, folder or Meta .pth checkpoint), once per process."""
    if model.endswith(".pth"):
        return load_meta_sam(model)
    from transformers import AutoProcessor, SamModel

    config = load_config(model, SETTING)
    if getattr(config, "model_type", None) != "sam":
        raise EdgedistillError(f"{model} is a '{getattr(config, 'model_type', None)}' model, not Segment Anything",
                               "set autolabel.sam_model to a SAM model, e.g. facebook/sam-vit-base")
    source, local_only = model_source(model, SETTING)
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
        network = SamModel.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as error:
        raise model_unavailable(model, SETTING, f"weights or processor: {type(error).__name__}") from None
    device = device or default_device()
    return SamSegmenter(network.to(device).eval(), processor, model, device)


def segment_boxes(segmenter: SamSegmenter, images: list[np.ndarray],
                  boxes: list[np.ndarray]) -> list[np.ndarray]:
    """For each image, one boolean mask (n, height, width) per box (n, 4) in x0, y0, x1, y1 pixels."""
    import torch

    inputs = [segmenter.processor(images=image, input_boxes=[box.tolist()], return_tensors="pt") if len(box) else
              segmenter.processor(images=image, return_tensors="pt") for image, box in zip(images, boxes)]
    pixels = torch.cat([item["pixel_values"] for item in inputs]).to(segmenter.device)
    masks = []
    with torch.inference_mode():
        embeddings = segmenter.model.get_image_embeddings(pixels)
        for index, (item, box) in enumerate(zip(inputs, boxes)):
            height, width = images[index].shape[:2]
            if len(box) == 0:
                masks.append(np.zeros((0, height, width), dtype=bool))
                continue
            outputs = segmenter.model(image_embeddings=embeddings[index:index + 1],
                                      input_boxes=item["input_boxes"].to(segmenter.device), multimask_output=False)
            upscaled = segmenter.processor.post_process_masks(outputs.pred_masks.cpu(), item["original_sizes"],
                                                              item["reshaped_input_sizes"])[0]
            masks.append(upscaled[:, 0].numpy().astype(bool))
    return masks


def add_masks(dataset: Dataset, samples: list[Sample], model: str, work_dir: Path, batch: int = 4,
              progress: Callable[[int, int], None] | None = None) -> list[Sample]:
    """Give every box label without a mask a Segment Anything mask; boxes and scores are unchanged.

    `batch` images are encoded together. Finished shards are kept in `work_dir` (a rerun skips
    them). The version's stage parameters record the SAM model (a Label has one source: its box's).
    """
    if batch < 1:
        raise EdgedistillError(f"batch must be at least 1, not {batch}", "pass a positive batch size")
    needy = [s for s in samples if s.kind == "image" and any(needs_mask(label) for label in s.labels)]
    segmenter = load_sam(model) if needy else None
    masked: dict[str, Sample] = {}
    for start in range(0, len(needy), SHARD_SIZE):
        for sample in mask_shard(dataset, needy[start:start + SHARD_SIZE], segmenter, batch, work_dir):
            masked[sample.id] = sample
        if progress:
            progress(min(start + SHARD_SIZE, len(needy)), len(needy))
    return [masked.get(s.id, s) for s in samples]


def needs_mask(label: Label) -> bool:
    return label.box is not None and label.mask is None and label.box[2] > 0 and label.box[3] > 0


def mask_shard(dataset: Dataset, shard: list[Sample], segmenter: SamSegmenter | MetaSamSegmenter, batch: int,
               work_dir: Path) -> list[Sample]:
    path = shard_path(work_dir, shard, segmenter.model_id)
    if path.exists():
        return [Sample.model_validate(item) for item in json.loads(path.read_text())]
    done = []
    for start in range(0, len(shard), batch):
        group = shard[start:start + batch]
        pictures = [load_image(path) for path in dataset.media_paths(group)]
        boxes = [xywh_to_xyxy([label.box for label in s.labels if needs_mask(label)]) for s in group]
        for sample, masks in zip(group, segmenter.segment(pictures, boxes)):
            done.append(with_masks(sample, masks))
    write_atomic(path, json.dumps([s.model_dump(mode="json") for s in done]).encode())
    return done


def with_masks(sample: Sample, masks: np.ndarray) -> Sample:
    """The sample with each mask given, in order, to its labels that needed one."""
    queue = iter(masks)
    labels = [label.model_copy(update={"mask": encode_rle(next(queue))}) if needs_mask(label) else label
              for label in sample.labels]
    return sample.model_copy(update={"labels": labels})


def shard_path(work_dir: Path, shard: list[Sample], model: str) -> Path:
    blob = json.dumps({"cache": CACHE_VERSION, "model": model,
                       "samples": [[s.id, s.media, [label.model_dump() for label in s.labels]] for s in shard]},
                      sort_keys=True, default=str)
    return Path(work_dir) / f"sam-{hashlib.sha256(blob.encode()).hexdigest()[:20]}.json"


# -- a tiny random model, for offline tests and benchmarks ---------------------------------------
def save_tiny_sam(folder: Path, image_size: int = 64, seed: int = 0) -> Path:
    """Save a random SAM small enough for a CPU test, with its processor, laid out like real weights."""
    import torch
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    width = 32
    config = SamConfig(
        vision_config=dict(hidden_size=width, output_channels=width, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=16, window_size=2, global_attn_indexes=[1],
                           num_pos_feats=width // 2, mlp_dim=2 * width),
        prompt_encoder_config=dict(hidden_size=width, image_size=image_size, patch_size=16),
        mask_decoder_config=dict(hidden_size=width, mlp_dim=2 * width, num_attention_heads=2,
                                 iou_head_hidden_dim=width),
    )
    torch.manual_seed(seed)
    SamModel(config).save_pretrained(folder)
    processor = SamImageProcessorPil(size={"longest_edge": image_size}, pad_size={"height": image_size,
                                                                                  "width": image_size})
    SamProcessor(image_processor=processor).save_pretrained(folder)
    return Path(folder)
