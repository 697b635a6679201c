"""Zero-shot boxes from OWL-ViT and OWLv2 (transformers), mapped onto the recipe's ontology.

Every prompt of every class, and every negative prompt, goes into one text query per image; the
model scores each of its candidate boxes against all of them and a box takes its best-matching
prompt. That prompt's class names the box; a box whose best match is a negative prompt is
dropped, and so is a box that a negative detection of its class covers (IoU > 0.5) with a higher
score: "baseball cap" suppresses a look-alike "hard hat". Per-class thresholds and NMS follow.

`model` is a hub id or a local folder with the model and its processor, loaded the same way
whether it holds real weights or a tiny random model (tests/tiny_models.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from edgedistill.dataset import Label, LabelSource
from edgedistill.errors import EdgedistillError
from edgedistill.labelling import BoxLabeler
from edgedistill.models import load_config, load_pretrained
from edgedistill.recipe import DetectionClass
from edgedistill.boxes import Detections, clip_boxes, iou_matrix

OWL_KINDS = ("owlv2", "owlvit")  # transformers model_type values, and our labeler names
SETTING = "autolabel.model"  # the recipe field that names the OWL model
NEGATIVE_IOU = 0.5  # a negative detection this close to a positive one, and more confident, suppresses it


# -- the ontology as one text query --------------------------------------------------------------
@dataclass(frozen=True)
class PromptQuery:
    """The text queries sent with each image, and what each one means."""

    texts: list[str]
    classes: list[str | None]  # the class a positive prompt names; None for a negative prompt
    guarded: list[frozenset[str]]  # the classes a negative prompt protects (empty for a positive)


def build_prompt_query(ontology: dict[str, DetectionClass]) -> PromptQuery:
    """One query holding every prompt once; a prompt that means two things is an error."""
    if not ontology:
        raise EdgedistillError("the ontology has no classes", "name at least one class with its prompts")
    owner: dict[str, str] = {}
    guarded: dict[str, set[str]] = {}
    for name, spec in ontology.items():
        if not spec.prompts:
            raise EdgedistillError(f"class '{name}' has no prompts", f"give '{name}' at least one prompt")
        for prompt in spec.prompts:
            key = normalise_prompt(prompt)
            if owner.get(key, name) != name:
                raise EdgedistillError(f"prompt '{prompt}' maps to two classes: '{owner[key]}' and '{name}'",
                                       "give each prompt to one class only")
            owner[key] = name
        for prompt in spec.negative_prompts:
            guarded.setdefault(normalise_prompt(prompt), set()).add(name)
    both = sorted(set(owner) & set(guarded))
    if both:
        raise EdgedistillError(f"prompt '{both[0]}' is a prompt of '{owner[both[0]]}' and a negative prompt of "
                               f"'{sorted(guarded[both[0]])[0]}'", "a prompt can mean a class or suppress one, not both")
    texts = list(owner) + list(guarded)
    return PromptQuery(texts=texts, classes=[owner.get(t) for t in texts],
                       guarded=[frozenset(guarded.get(t, ())) for t in texts])


def normalise_prompt(prompt: str) -> str:
    return " ".join(prompt.casefold().split())


# -- the model ---------------------------------------------------------------------------------
@dataclass
class OwlDetector:
    """A loaded OWL model and processor, with what labels record about it."""

    model: Any
    processor: Any
    kind: str  # "owlv2" or "owlvit"
    model_id: str
    version: str
    device: str


@cache
def load_owl(model: str) -> OwlDetector:
    """The OWL-ViT or OWLv2 detector at `model` (hub id or folder), once per process."""
    import transformers
    from transformers import Owlv2ForObjectDetection, OwlViTForObjectDetection

    config = load_config(model, SETTING)
    kind = getattr(config, "model_type", None)
    if kind not in OWL_KINDS:
        raise EdgedistillError(f"{model} is a '{kind}' model, not an OWL-ViT or OWLv2 detector",
                               "set autolabel.model to an OWL model, e.g. google/owlv2-base-patch16-ensemble")
    network, processor, device = load_pretrained(
        model, SETTING, Owlv2ForObjectDetection if kind == "owlv2" else OwlViTForObjectDetection)
    version = getattr(config, "_commit_hash", None) or f"transformers {transformers.__version__}"
    return OwlDetector(network, processor, kind, model, version, device)


# -- detection ---------------------------------------------------------------------------------
def detect_batch(detector: OwlDetector, images: list[np.ndarray], texts: list[str]) -> list[Detections]:
    """Run the model once on a batch of RGB images, every image with the same text queries: every
    candidate box, in the image's pixels, with its best-matching query (index into `texts`) as class id."""
    import torch

    # prompts are padded (and, when long, cut) to the text model's fixed length, as OWL was trained
    length = detector.model.config.text_config.max_position_embeddings
    inputs = detector.processor(text=[texts] * len(images), images=images, return_tensors="pt",
                                padding="max_length", truncation=True, max_length=length)
    inputs = {name: value.to(detector.device) for name, value in inputs.items()}
    with torch.inference_mode():
        outputs = detector.model(**inputs)
    sizes = [image.shape[:2] for image in images]
    # threshold 0: keep every candidate; the ontology's thresholds are applied per class afterwards
    results = detector.processor.post_process_grounded_object_detection(outputs, threshold=0.0, target_sizes=sizes)
    return [Detections(result["boxes"].float().cpu().numpy(), result["scores"].float().cpu().numpy(),
                       result["labels"].cpu().numpy()) for result in results]


def suppressed_by_negatives(raw: Detections, query: PromptQuery, classes: np.ndarray,
                            candidates: np.ndarray) -> np.ndarray:
    """For each candidate box (indices of positive boxes), whether a more confident negative
    detection of its class covers it."""
    if len(candidates) == 0:
        return np.zeros(0, dtype=bool)
    is_negative = np.array([bool(query.guarded[q]) for q in raw.class_ids], dtype=bool)
    # only a negative more confident than some candidate can suppress anything
    negative = np.flatnonzero(is_negative & (raw.scores > raw.scores[candidates].min()))
    if len(negative) == 0:
        return np.zeros(len(candidates), dtype=bool)
    overlaps = iou_matrix(raw.boxes[candidates], raw.boxes[negative]) > NEGATIVE_IOU
    stronger = raw.scores[negative][None, :] > raw.scores[candidates][:, None]
    guards = np.array([[classes[p] in query.guarded[raw.class_ids[n]] for n in negative] for p in candidates],
                      dtype=bool)
    return (overlaps & stronger & guards).any(axis=1)


# -- the labeler -------------------------------------------------------------------------------
class OwlLabeler(BoxLabeler):
    """Boxes from OWL-ViT/OWLv2 (`settings.model`) on image samples, run by edgedistill.labelling.

    Review routing happens later: a label scoring below the recipe's `review.threshold` goes to people.
    """

    def load(self) -> None:
        self.query = build_prompt_query(self.ontology)
        self.detector = load_owl(self.settings.model)
        self.source = LabelSource(labeler=self.detector.kind, model=self.detector.model_id,
                                  version=self.detector.version)

    def boxes(self, images: list[np.ndarray]) -> list[list[Label]]:
        return [self.select_raw(raw, image.shape[1], image.shape[0])
                for image, raw in zip(images, detect_batch(self.detector, images, self.query.texts))]

    def select_raw(self, raw: Detections, width: int, height: int) -> list[Label]:
        """Map every candidate to its prompt's class: thresholds, negative prompts, then NMS."""
        raw = raw.with_boxes(clip_boxes(raw.boxes, width, height))
        classes = np.array([self.query.classes[q] or "" for q in raw.class_ids], dtype=object)
        candidates = np.flatnonzero(self.confident(raw.scores, classes))
        classes[candidates[suppressed_by_negatives(raw, self.query, classes, candidates)]] = ""
        return self.select(raw, classes, width, height)
