"""Masks from boxes with Segment Anything, stored as COCO RLE.

Each image is encoded once (the heavy ViT, batched over images); all of its boxes then go through
the light prompt encoder and mask decoder together. Boxes are prompts only: they stay as they were.
`model` is a hub id or a local folder for transformers' SamModel (tests/tiny_models.py makes a
random one for offline tests), or a Meta segment-anything checkpoint (.pth, labelers/sam_meta.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from edgedistill.dataset import Dataset, Label, LabelSource, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.images import load_image
from edgedistill.labelling import Labeler
from edgedistill.masks import encode_rle
from edgedistill.boxes import xywh_to_xyxy
from edgedistill.models import load_config, load_pretrained
from labelers.sam_meta import MetaSamSegmenter, load_meta_sam

SETTING = "autolabel.sam_model"  # the recipe field that names the SAM model


@dataclass
class SamSegmenter:
    model: Any
    processor: Any
    device: str
    model_id: str

    def segment(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        return segment_boxes(self, images, boxes)


@cache
def load_sam(model: str) -> SamSegmenter | MetaSamSegmenter:
    """The Segment Anything model at `model` (hub id, folder or Meta .pth checkpoint), once per process."""
    if model.endswith(".pth"):
        return load_meta_sam(model)
    from transformers import SamModel

    config = load_config(model, SETTING)
    if getattr(config, "model_type", None) != "sam":
        raise EdgedistillError(f"{model} is a '{getattr(config, 'model_type', None)}' model, not Segment Anything",
                               "set autolabel.sam_model to a SAM model, e.g. facebook/sam-vit-base")
    return SamSegmenter(*load_pretrained(model, SETTING, SamModel), model)


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


class SamLabeler(Labeler):
    """Gives every box label without a mask a Segment Anything mask; boxes and scores are unchanged.

    `batch_size` images are encoded together. The version's stage parameters record the SAM model
    (a Label has one source: its box's).
    """

    def __init__(self, model: str, batch_size: int = 4):
        if batch_size < 1:
            raise EdgedistillError(f"batch size must be at least 1, not {batch_size}", "pass a positive batch size")
        self.model, self.batch_size = model, batch_size

    def load(self) -> None:
        self.segmenter = load_sam(self.model)
        self.source = LabelSource(labeler="sam", model=self.model)

    def wants(self, sample: Sample) -> bool:
        return sample.kind == "image" and any(needs_mask(label) for label in sample.labels)

    def label(self, dataset: Dataset, samples: list[Sample]) -> list[Sample]:
        done = []
        for start in range(0, len(samples), self.batch_size):
            group = samples[start:start + self.batch_size]
            pictures = [load_image(path) for path in dataset.media_paths(group)]
            boxes = [xywh_to_xyxy([label.box for label in s.labels if needs_mask(label)]) for s in group]
            done += [with_masks(sample, masks) for sample, masks in zip(group, self.segmenter.segment(pictures, boxes))]
        return done


def needs_mask(label: Label) -> bool:
    return label.box is not None and label.mask is None and label.box[2] > 0 and label.box[3] > 0


def with_masks(sample: Sample, masks: np.ndarray) -> Sample:
    """The sample with each mask given, in order, to its labels that needed one."""
    queue = iter(masks)
    labels = [label.model_copy(update={"mask": encode_rle(next(queue))}) if needs_mask(label) else label
              for label in sample.labels]
    return sample.model_copy(update={"labels": labels})
