"""Zero-shot boxes from OWL-ViT and OWLv2 (transformers), mapped onto the recipe's ontology.

Every prompt of every class, and every negative prompt, goes into one text query per image; the
model scores each of its candidate boxes against all of them and a box takes its best-matching
prompt. That prompt's class names the box; a box whose best match is a negative prompt is
dropped, and so is a box that a negative detection of its class covers (IoU > 0.5) with a higher
score: "baseball cap" suppresses a look-alike "hard hat". Per-class thresholds and NMS follow.

`model` is a hub id or a local folder with the model and its processor, loaded the same way
whether it holds real weights or a tiny random model (`save_tiny_owl`, for offline tests).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgedistill.dataset import Dataset, Label, LabelSource, Sample, write_atomic
from edgedistill.errors import EdgedistillError
from edgedistill.images import load_image
from edgedistill.models import default_device, load_config, model_source, model_unavailable
from edgedistill.recipe import AutoLabelSettings, DetectionClass
from edgedistill.boxes import clip_boxes, iou_matrix, non_max_suppression, xyxy_to_xywh

OWL_KINDS = ("owlv2", "owlvit")  # transformers model_type values, and our labeler names
SETTING = "autolabel.model"  # the recipe field that names the OWL model
NEGATIVE_IOU = 0.5  # a negative detection this close to a positive one, and more confident, suppresses it
SHARD_SIZE = 32  # samples per resumable shard
CACHE_VERSION = 1  # part of every shard's name: bump when results would change


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
def load_owl(model: str, device: str | None = None) -> OwlDetector:
    """The OWL-ViT or OWLv2 detector at `model` (hub id or folder), once per process."""
    import transformers
    from transformers import AutoProcessor, Owlv2ForObjectDetection, OwlViTForObjectDetection

    config = load_config(model, SETTING)
    kind = getattr(config, "model_type", None)
    if kind not in OWL_KINDS:
        raise EdgedistillError(f"{model} is a '{kind}' model, not an OWL-ViT or OWLv2 detector",
                               "set autolabel.model to an OWL model, e.g. google/owlv2-base-patch16-ensemble")
    source, local_only = model_source(model, SETTING)
    model_class = Owlv2ForObjectDetection if kind == "owlv2" else OwlViTForObjectDetection
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
        network = model_class.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as error:
        raise model_unavailable(model, SETTING, f"weights or processor: {type(error).__name__}") from None
    device = device or default_device()
    version = getattr(config, "_commit_hash", None) or f"transformers {transformers.__version__}"
    return OwlDetector(network.to(device).eval(), processor, kind, model, version, device)


# -- detection ---------------------------------------------------------------------------------
@dataclass
class RawDetections:
    """Every candidate box of one image with its best-matching query (index into PromptQuery.texts)."""

    boxes: np.ndarray  # (n, 4) x0, y0, x1, y1 in pixels of the original image
    scores: np.ndarray  # (n,)
    queries: np.ndarray  # (n,) int


def detect_batch(detector: OwlDetector, images: list[np.ndarray], texts: list[str]) -> list[RawDetections]:
    """Run the model once on a batch of RGB images, every image with the same text queries."""
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
    return [RawDetections(result["boxes"].float().cpu().numpy().astype(np.float64),
                          result["scores"].float().cpu().numpy().astype(np.float64),
                          result["labels"].cpu().numpy().astype(np.int64)) for result in results]


@dataclass
class Detection:
    class_name: str
    box: np.ndarray  # x0, y0, x1, y1 pixels
    score: float


def select_detections(raw: RawDetections, query: PromptQuery, ontology: dict[str, DetectionClass],
                      settings: AutoLabelSettings, width: int, height: int) -> list[Detection]:
    """Map raw boxes to ontology classes: thresholds, negative prompts, then NMS."""
    boxes = clip_boxes(raw.boxes, width, height)
    classes = np.array([query.classes[q] or "" for q in raw.queries], dtype=object)
    thresholds = np.array([class_threshold(ontology, c, settings) if c else np.inf for c in classes])
    positive = np.flatnonzero((raw.scores >= thresholds) & (xyxy_to_xywh(boxes)[:, 2:].min(axis=1) > 0))
    positive = positive[~suppressed_by_negatives(positive, boxes, raw, query, classes)]
    groups = None if settings.class_agnostic_nms else np.unique(classes[positive], return_inverse=True)[1]
    kept = positive[non_max_suppression(boxes[positive], raw.scores[positive], settings.nms_iou, groups)]
    return [Detection(str(classes[i]), boxes[i], float(raw.scores[i])) for i in kept]


def class_threshold(ontology: dict[str, DetectionClass], class_name: str, settings: AutoLabelSettings) -> float:
    threshold = ontology[class_name].threshold
    return settings.threshold if threshold is None else threshold


def suppressed_by_negatives(positive: np.ndarray, boxes: np.ndarray, raw: RawDetections, query: PromptQuery,
                            classes: np.ndarray) -> np.ndarray:
    """For each positive box, whether a more confident negative detection of its class covers it."""
    is_negative = np.array([bool(query.guarded[q]) for q in raw.queries], dtype=bool)
    if len(positive) == 0:
        return np.zeros(0, dtype=bool)
    # only a negative more confident than some positive can suppress anything
    negative = np.flatnonzero(is_negative & (raw.scores > raw.scores[positive].min()))
    if len(negative) == 0:
        return np.zeros(len(positive), dtype=bool)
    overlaps = iou_matrix(boxes[positive], boxes[negative]) > NEGATIVE_IOU
    stronger = raw.scores[negative][None, :] > raw.scores[positive][:, None]
    guards = np.array([[classes[p] in query.guarded[raw.queries[n]] for n in negative] for p in positive], dtype=bool)
    return (overlaps & stronger & guards).any(axis=1)


def detections_to_labels(detections: list[Detection], source: LabelSource) -> list[Label]:
    labels = []
    for detection in detections:
        x, y, w, h = (round(float(v), 2) for v in xyxy_to_xywh(detection.box)[0])
        labels.append(Label(class_name=detection.class_name, box=(x, y, w, h), score=round(detection.score, 6),
                            source=source))
    return labels


# -- over a dataset ----------------------------------------------------------------------------
def label_with_owl(dataset: Dataset, samples: list[Sample], ontology: dict[str, DetectionClass],
                   settings: AutoLabelSettings, work_dir: Path,
                   progress: Callable[[int, int], None] | None = None) -> list[Sample]:
    """Boxes from OWL-ViT/OWLv2 on every image sample (audio samples pass through unchanged).

    Labels this labeler made before are replaced; labels from other sources (people, compositing)
    are kept. Finished shards are saved in `work_dir`, so a rerun after a crash skips them.
    Review routing happens later: a label scoring below the recipe's `review.threshold` goes to people.
    """
    query = build_prompt_query(ontology)
    detector = load_owl(settings.model)
    source = LabelSource(labeler=detector.kind, model=detector.model_id, version=detector.version)
    images = [s for s in samples if s.kind == "image"]
    labelled: dict[str, Sample] = {}
    for start in range(0, len(images), SHARD_SIZE):
        shard = images[start:start + SHARD_SIZE]
        for sample in label_shard(dataset, shard, detector, query, ontology, settings, source, work_dir):
            labelled[sample.id] = sample
        if progress:
            progress(min(start + SHARD_SIZE, len(images)), len(images))
    return [labelled.get(s.id, s) for s in samples]


def label_shard(dataset: Dataset, shard: list[Sample], detector: OwlDetector, query: PromptQuery,
                ontology: dict[str, DetectionClass], settings: AutoLabelSettings, source: LabelSource,
                work_dir: Path) -> list[Sample]:
    path = shard_path(work_dir, shard, query, ontology, settings, source)
    if path.exists():
        return [Sample.model_validate(item) for item in json.loads(path.read_text())]
    done = []
    for start in range(0, len(shard), settings.batch_size):
        batch = shard[start:start + settings.batch_size]
        pictures = [load_image(path) for path in dataset.media_paths(batch)]
        for sample, labels in zip(batch, _labels_of(detector, query, ontology, settings, source, pictures)):
            kept = [label for label in sample.labels if label.source.labeler != source.labeler]
            done.append(sample.model_copy(update={"labels": kept + labels}))
    write_atomic(path, json.dumps([s.model_dump(mode="json") for s in done]).encode())
    return done


def owl_labels(images: list[np.ndarray], ontology: dict[str, DetectionClass],
               settings: AutoLabelSettings) -> list[list[Label]]:
    """The labels OWL gives each RGB image, exactly as it labels a dataset: what the student is measured
    against on real photos."""
    query = build_prompt_query(ontology)
    detector = load_owl(settings.model)
    source = LabelSource(labeler=detector.kind, model=detector.model_id, version=detector.version)
    return [labels for start in range(0, len(images), settings.batch_size)
            for labels in _labels_of(detector, query, ontology, settings, source,
                                     images[start:start + settings.batch_size])]


def _labels_of(detector: OwlDetector, query: PromptQuery, ontology: dict[str, DetectionClass],
               settings: AutoLabelSettings, source: LabelSource, pictures: list[np.ndarray]) -> list[list[Label]]:
    return [detections_to_labels(select_detections(raw, query, ontology, settings, picture.shape[1],
                                                   picture.shape[0]), source)
            for picture, raw in zip(pictures, detect_batch(detector, pictures, query.texts))]


def shard_path(work_dir: Path, shard: list[Sample], query: PromptQuery, ontology: dict[str, DetectionClass],
               settings: AutoLabelSettings, source: LabelSource) -> Path:
    """A shard's results file, named by everything that shapes them (batch size aside)."""
    blob = json.dumps({
        "cache": CACHE_VERSION, "source": source.model_dump(), "texts": query.texts,
        "ontology": {name: spec.model_dump() for name, spec in ontology.items()},
        "settings": settings.model_dump(exclude={"batch_size"}),
        "samples": [[s.id, s.media, [label.model_dump() for label in s.labels]] for s in shard],
    }, sort_keys=True, default=str)
    return Path(work_dir) / f"owl-{hashlib.sha256(blob.encode()).hexdigest()[:20]}.json"


# -- a tiny random model, for offline tests and benchmarks ---------------------------------------
def save_tiny_owl(folder: Path, kind: str = "owlv2", image_size: int = 96, seed: int = 0,
                  base_size: bool = False) -> Path:
    """Save a random OWL model small enough for a CPU test, with a processor and a local CLIP
    tokenizer, laid out exactly like downloaded weights (so `load_owl(folder)` is the real path).

    `base_size=True` gives the shape of the released base models instead (OWLv2 B/16 at 960 px,
    OWL-ViT B/32 at 768 px) with random weights: their speed, for benchmarks without the weights."""
    import torch
    from transformers import (CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2Processor, OwlViTConfig,
                              OwlViTForObjectDetection, OwlViTProcessor)
    from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil
    from transformers.models.owlvit.image_processing_pil_owlvit import OwlViTImageProcessorPil

    folder = Path(folder)
    tokenizer = save_tiny_clip_tokenizer(folder / "tokenizer-source")
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer, model_max_length=16)
    tokens = dict(vocab_size=len(tokenizer), max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if base_size:
        image_size = 960 if kind == "owlv2" else 768
        text = dict(tokens, hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=image_size, patch_size=16 if kind == "owlv2" else 32)
    else:
        text = dict(tokens, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      image_size=image_size, patch_size=16)
    projection = 512 if base_size else 32
    size = {"height": image_size, "width": image_size}
    torch.manual_seed(seed)
    if kind == "owlv2":
        network = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=projection))
        processor = Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size=size), tokenizer=tokenizer)
    elif kind == "owlvit":
        network = OwlViTForObjectDetection(OwlViTConfig(text_config=text, vision_config=vision, projection_dim=projection))
        processor = OwlViTProcessor(image_processor=OwlViTImageProcessorPil(size=size, crop_size=size),
                                    tokenizer=tokenizer)
    else:
        raise ValueError(f"kind must be one of {OWL_KINDS}")
    with torch.no_grad():  # tame the random heads: boxes near each patch's prior, scores spread out, not 0 or 1
        network.box_head.dense2.weight.mul_(0.02)
        network.class_head.logit_shift.weight.mul_(0.05)
        network.class_head.logit_scale.weight.mul_(0.05)
    network.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_clip_tokenizer(folder: Path) -> Path:
    """A byte-level CLIP BPE vocabulary with no merges (every word is spelled in characters)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    characters = list(bytes_to_unicode().values())
    tokens = characters + [c + "</w>" for c in characters] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder
