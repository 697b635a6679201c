"""An existing detector as teacher: any ONNX or TFLite model plus a small adapter.

An adapter says how to feed the model (input size, letterbox or stretch, normalisation, layout)
and how to read it (a decoder from raw outputs to boxes, scores and class ids); the recipe's
`teacher_classes` maps the teacher's classes onto the ontology. Adapters live in a registry by
name; `register_adapter` adds one.

Shipped adapters: MediaPipe's BlazeFace face detectors (short range, 128x128; full range,
192x192). Their .tflite files come inside the `mediapipe==0.10.21` wheel, which we never import
or install (it pins numpy<2): `python -m labelers.teachers fetch` downloads the wheel from PyPI
with pip and extracts the files into the models folder (EDGEDISTILL_MODELS, by default
~/.cache/edgedistill/models). A mediapipe installed with `pip install --no-deps` is found too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from edgedistill.boxes import Detections
from edgedistill.dataset import Label, LabelSource, sha256_file, write_atomic
from edgedistill.errors import EdgedistillError
from edgedistill.images import Placement, place
from edgedistill.labelling import BoxLabeler
from edgedistill.recipe import AutoLabelSettings, DetectionClass
from edgedistill.runtimes import OnnxModel, TfliteModel, open_model

LABELER = "teacher"
MODELS_ENV = "EDGEDISTILL_MODELS"
PACKAGED = "packaged"  # autolabel.model value meaning "the adapter's packaged weights"

# raw model outputs -> detections, their boxes (x0, y0, x1, y1) as shares of the model input
Decoder = Callable[[list[np.ndarray]], Detections]


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes the model's input tensor: ((pixel - mean) / std) in `layout`."""

    width: int
    height: int
    letterbox: bool = True  # keep the aspect ratio and pad (MediaPipe's way); False: stretch
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)
    layout: Literal["NHWC", "NCHW"] = "NHWC"


@dataclass(frozen=True)
class PackagedWeights:
    """A model file that ships inside a PyPI wheel: fetched with pip, never imported."""

    requirement: str  # e.g. mediapipe==0.10.21
    member: str  # the file's path inside the wheel


@dataclass(frozen=True)
class TeacherAdapter:
    name: str
    classes: list[str]  # the teacher's class names, by class id
    preprocess: Preprocess
    decode: Decoder
    packaged: PackagedWeights | None = None
    description: str = ""


ADAPTERS: dict[str, TeacherAdapter] = {}


def register_adapter(adapter: TeacherAdapter) -> TeacherAdapter:
    ADAPTERS[adapter.name] = adapter
    return adapter


def get_adapter(name: str | None) -> TeacherAdapter:
    if name not in ADAPTERS:
        known = ", ".join(sorted(ADAPTERS))
        raise EdgedistillError(f"there is no teacher adapter called '{name}'",
                               f"set autolabel.teacher_adapter to one of: {known}")
    return ADAPTERS[name]


# -- BlazeFace (MediaPipe face detection) ------------------------------------------------------------
def ssd_anchor_centres(input_size: int, strides: list[int], anchors_per_layer: int) -> np.ndarray:
    """MediaPipe's SsdAnchorsCalculator with fixed_anchor_size: (n, 2) x, y centres in [0, 1].

    Consecutive layers with the same stride share one grid, each adding `anchors_per_layer`
    anchors per cell; anchors are ordered by row, column, then anchor.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        same = 1
        while layer + same < len(strides) and strides[layer + same] == stride:
            same += 1
        cells = -(-input_size // stride)  # ceil, as MediaPipe does
        grid_y, grid_x = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        per_cell = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
        centres.append(np.repeat(per_cell, same * anchors_per_layer, axis=0))
        layer += same
    return np.concatenate(centres)


def ssd_decoder(input_size: int, strides: list[int], anchors_per_layer: int, coords: int,
                to_boxes: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Decoder:
    """Decode a MediaPipe SSD detector as its TensorsToDetectionsCalculator does (scale = input size):
    regressors (n, `coords`: box centre offset and size, then keypoint offsets) and logits (n, 1) against
    its anchors. `to_boxes(box, keypoints)` turns the decoded box (n, 4: x0, y0, x1, y1) and keypoints
    (n, k, 2), all as shares of the input, into the detections' boxes."""
    anchors = ssd_anchor_centres(input_size, strides, anchors_per_layer)

    def decode(outputs: list[np.ndarray]) -> Detections:
        regressors = next(o for o in outputs if o.shape[-1] == coords).reshape(-1, coords)
        logits = next(o for o in outputs if o.shape[-1] == 1).reshape(-1).astype(np.float64)
        if len(regressors) != len(anchors):
            raise EdgedistillError(f"the model gives {len(regressors)} boxes but this adapter has {len(anchors)} anchors",
                                   "choose the adapter that matches the model file")
        centre = regressors[:, :2] / input_size + anchors
        size = regressors[:, 2:4] / input_size
        keypoints = regressors[:, 4:].reshape(len(anchors), -1, 2) / input_size + anchors[:, None]
        boxes = to_boxes(np.concatenate([centre - size / 2, centre + size / 2], axis=1), keypoints)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100.0, 100.0)))  # MediaPipe clips logits at 100
        return Detections(boxes, scores, np.zeros(len(scores), dtype=np.int64))

    return decode


def face_box(box: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    return box


BODY_HALF_WIDTH = 0.4  # a body's half width as a share of its half length (shoulders and arms)


def body_box(face: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """BlazePose's detector boxes the face; its keypoints 0 (mid-hip) and 1 (a point on the circle
    around the whole body, along the body's axis) give the person: a rectangle centred on the hips,
    reaching the circle's radius each way along the axis and BODY_HALF_WIDTH of it each way across,
    as its axis-aligned bounds (so a lying or tilted person is boxed too)."""
    hips, axis = keypoints[:, 0], keypoints[:, 1] - keypoints[:, 0]
    across = np.stack([-axis[:, 1], axis[:, 0]], axis=1) * BODY_HALF_WIDTH
    reach = np.abs(axis) + np.abs(across)
    return np.concatenate([hips - reach, hips + reach], axis=1)


MEDIAPIPE = "mediapipe==0.10.21"  # 0.10.30 and later ship no models (OFFLINE.md)
BLAZEFACE_NORMALISATION = dict(mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5))  # pixels to [-1, 1]

register_adapter(TeacherAdapter(
    name="blazeface_short_range", classes=["face"],
    preprocess=Preprocess(128, 128, letterbox=True, **BLAZEFACE_NORMALISATION),
    decode=ssd_decoder(128, [8, 16, 16, 16], anchors_per_layer=2, coords=16, to_boxes=face_box),
    packaged=PackagedWeights(MEDIAPIPE, "mediapipe/modules/face_detection/face_detection_short_range.tflite"),
    description="MediaPipe BlazeFace, faces within ~2 m of the camera (selfies, webcams)",
))
register_adapter(TeacherAdapter(
    name="blazeface_full_range", classes=["face"],
    preprocess=Preprocess(192, 192, letterbox=True, **BLAZEFACE_NORMALISATION),
    decode=ssd_decoder(192, [4], anchors_per_layer=1, coords=16, to_boxes=face_box),
    packaged=PackagedWeights(MEDIAPIPE, "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite"),
    description="MediaPipe BlazeFace full range, smaller faces up to ~5 m away",
))
register_adapter(TeacherAdapter(
    name="blazepose", classes=["person"],
    preprocess=Preprocess(224, 224, letterbox=True, **BLAZEFACE_NORMALISATION),
    decode=ssd_decoder(224, [8, 16, 32, 32, 32], anchors_per_layer=2, coords=12, to_boxes=body_box),
    packaged=PackagedWeights(MEDIAPIPE, "mediapipe/modules/pose_detection/pose_detection.tflite"),
    description="MediaPipe BlazePose's person detector: one box per person whose face and body it sees",
))


# -- the model file ----------------------------------------------------------------------------
def models_dir() -> Path:
    return Path(os.environ.get(MODELS_ENV) or Path.home() / ".cache" / "edgedistill" / "models").expanduser()


def find_packaged(weights: PackagedWeights) -> Path | None:
    """The packaged file in the models folder, or inside an installed (never imported) package."""
    local = models_dir() / Path(weights.member).name
    if local.is_file():
        return local
    package = weights.requirement.split("==")[0]
    try:
        inside = Path(str(metadata.distribution(package).locate_file(weights.member)))
    except metadata.PackageNotFoundError:
        return None
    return inside if inside.is_file() else None


def fetch_packaged(adapters: list[TeacherAdapter] | None = None, dest: Path | None = None) -> list[Path]:
    """Download the wheels that carry the adapters' weights from PyPI (pip, no dependencies, nothing
    installed) and extract the model files into `dest` (the models folder)."""
    dest = dest or models_dir()
    wanted = [a.packaged for a in (adapters or ADAPTERS.values()) if a.packaged]
    written = []
    for requirement in sorted({w.requirement for w in wanted}):
        with tempfile.TemporaryDirectory() as folder:
            subprocess.run([sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--only-binary=:all:",
                            "--dest", folder, "--quiet"], check=True)
            wheel = next(Path(folder).glob("*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                for weights in (w for w in wanted if w.requirement == requirement):
                    target = dest / Path(weights.member).name
                    write_atomic(target, archive.read(weights.member))
                    written.append(target)
    return written


def resolve_teacher_model(model: str, adapter: TeacherAdapter) -> Path:
    """`model` is an .onnx/.tflite file, or "packaged" (also the default autolabel.model, which
    names an OWL model) for the adapter's packaged weights."""
    unset = model in ("", PACKAGED, AutoLabelSettings.model_fields["model"].default)
    if unset and adapter.packaged:
        found = find_packaged(adapter.packaged)
        if found is None:
            raise EdgedistillError(
                f"the weights of teacher '{adapter.name}' ({Path(adapter.packaged.member).name}) are not here",
                f"run `python -m labelers.teachers fetch` (downloads the {adapter.packaged.requirement} wheel from "
                f"PyPI and extracts them into {models_dir()}), or set autolabel.model to the file")
        return found
    path = Path(model).expanduser()
    if not path.is_file():
        raise EdgedistillError(f"the teacher model file {path} does not exist",
                               "set autolabel.model to an .onnx or .tflite detector"
                               + (f", or to '{PACKAGED}' for {adapter.name}'s own weights" if adapter.packaged else ""))
    if path.suffix.lower() not in (".onnx", ".tflite"):
        raise EdgedistillError(f"{path} is not an ONNX or TFLite model", "use a .onnx or .tflite file")
    return path


# -- running it --------------------------------------------------------------------------------
@cache
def open_runtime(path: Path) -> TfliteModel | OnnxModel:
    """The teacher's model file, opened once per process."""
    return open_model(path)


def prepare_input(image: np.ndarray, spec: Preprocess) -> tuple[np.ndarray, Placement]:
    canvas, placement = place(image, spec.width, spec.height, spec.letterbox)
    tensor = (canvas.astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)
    return (tensor.transpose(2, 0, 1) if spec.layout == "NCHW" else tensor), placement


def boxes_to_image(boxes: np.ndarray, spec: Preprocess, placement: Placement) -> np.ndarray:
    """Boxes as shares of the model input -> pixels of the original image."""
    return placement.boxes_to_original(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
                                       * [spec.width, spec.height, spec.width, spec.height])


def teach_batch(adapter: TeacherAdapter, runtime: TfliteModel | OnnxModel, images: list[np.ndarray],
                views: tuple[str, ...] = ()) -> list[Detections]:
    """Each image's detections in its pixels (class ids are the teacher's), before thresholds and NMS.

    `views` adds test-time augmentation: "flip" (the mirrored image) and "tiles" (four overlapping
    corner tiles, each seen at about 1.6 times the scale, for small objects); every view's boxes come
    back in the image's pixels, and NMS later keeps the best of overlapping ones.
    """
    seen = [(index, view, to_image) for index, image in enumerate(images) for view, to_image in _views(image, views)]
    prepared = [prepare_input(view, adapter.preprocess) for _, view, _ in seen]
    outputs = runtime.run_batch(np.stack([tensor for tensor, _ in prepared]))
    found: list[list[Detections]] = [[] for _ in images]
    for (index, view, to_image), (_, placement), raw in zip(seen, prepared, outputs):
        decoded = adapter.decode(raw)
        boxes, keep = to_image(boxes_to_image(decoded.boxes, adapter.preprocess, placement))
        found[index].append(decoded.with_boxes(boxes)[keep])
    return [Detections.merge(per_image) for per_image in found]


TILE_SHARE = 0.625  # a tile's side as a share of the image's: 2x2 tiles overlap by a quarter
TILE_EDGE = 2.0  # pixels: a box this close to a tile's inner edge is cut off by it, and left to the other views


def _views(image: np.ndarray, views: tuple[str, ...]) -> list[tuple[np.ndarray, Callable]]:
    """(view, boxes in view pixels -> (boxes in image pixels, which to keep)) for the image and each view."""
    height, width = image.shape[:2]
    result: list[tuple[np.ndarray, Callable]] = [(image, lambda b: (b, np.ones(len(b), bool)))]
    if "flip" in views:
        result.append((np.ascontiguousarray(image[:, ::-1]),
                       lambda b: (np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], axis=1),
                                  np.ones(len(b), bool))))
    if "tiles" in views:
        tile_w, tile_h = int(np.ceil(width * TILE_SHARE)), int(np.ceil(height * TILE_SHARE))
        for top in (0, height - tile_h):
            for left in (0, width - tile_w):
                inner = np.array([left > 0, top > 0, left + tile_w < width, top + tile_h < height])
                limits = np.array([TILE_EDGE, TILE_EDGE, tile_w - TILE_EDGE, tile_h - TILE_EDGE])

                def to_image(b, left=left, top=top, inner=inner, limits=limits):
                    cut = ((b[:, :2] < limits[:2]) & inner[:2]).any(axis=1) | ((b[:, 2:] > limits[2:]) & inner[2:]).any(axis=1)
                    return b + [left, top, left, top], ~cut

                result.append((np.ascontiguousarray(image[top:top + tile_h, left:left + tile_w]), to_image))
    return result


# -- mapping to the ontology -------------------------------------------------------------------
def class_map(adapter: TeacherAdapter, teacher_classes: dict[str, str],
              ontology: dict[str, DetectionClass]) -> dict[int, str]:
    """Teacher class id -> ontology class. Without a map, teacher classes named like ontology
    classes map to them; teacher classes left out are ignored."""
    mapping = teacher_classes or {c: c for c in adapter.classes if c in ontology}
    unknown = sorted(set(mapping) - set(adapter.classes))
    if unknown:
        raise EdgedistillError(f"teacher '{adapter.name}' has no class {unknown[0]}",
                               f"its classes are: {', '.join(adapter.classes)}")
    outside = sorted(set(mapping.values()) - set(ontology))
    if outside:
        raise EdgedistillError(f"teacher_classes maps to '{outside[0]}', which is not a class of the recipe",
                               f"map to one of: {', '.join(ontology)}")
    if not mapping:
        raise EdgedistillError(f"no class of teacher '{adapter.name}' ({', '.join(adapter.classes)}) maps to the "
                               "recipe's classes", "set autolabel.teacher_classes, e.g. {face: person_face}")
    return {adapter.classes.index(name): target for name, target in mapping.items()}


# -- the labeler -------------------------------------------------------------------------------
class TeacherLabeler(BoxLabeler):
    """Boxes from the teacher (`settings.model` read with `settings.teacher_adapter`) on image samples,
    run by edgedistill.labelling."""

    shard_size = 64

    def load(self) -> None:
        self.adapter = get_adapter(self.settings.teacher_adapter)
        self.mapping = class_map(self.adapter, self.settings.teacher_classes, self.ontology)
        path = resolve_teacher_model(self.settings.model, self.adapter)
        self.runtime = open_runtime(path.resolve())
        self.source = LabelSource(labeler=LABELER, model=f"{self.adapter.name}:{path.name}",
                                  version=f"sha256:{sha256_file(path)[:16]}")

    def boxes(self, images: list[np.ndarray]) -> list[list[Label]]:
        found = teach_batch(self.adapter, self.runtime, images, tuple(self.settings.views))
        return [self.select(detections, np.array([self.mapping.get(int(c), "") for c in detections.class_ids],
                                                 dtype=object), image.shape[1], image.shape[0])
                for image, detections in zip(images, found)]


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: python -m labelers.teachers fetch   (put the packaged teachers' weights in the models folder)")
    for written in fetch_packaged():
        print(written)
