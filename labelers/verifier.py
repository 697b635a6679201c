"""Auto-labels checked by a vision-language model (GPT-4o class, or any OpenAI-compatible server).

One request per image: the image with its auto-labelled boxes drawn and numbered, the ontology as
the classes to choose from, and each box's number, class and place. The answer, held to a JSON
schema, accepts, relabels or rejects every box with a short reason. Nothing is deleted: each label
keeps its verdict (a relabelled one its new class, and the old), a doubted sample goes to review in
Label Studio, and a rejected label stays out of training until people decide (boxes.Detections).

`verify_labels` is the stage: it plans how many images the budget (verify.max_requests, max_cost)
affords, answers cached earlier being free, and runs the verifier on the shard driver.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Callable, Literal

import cv2
import numpy as np
from pydantic import BaseModel

from edgedistill.dataset import Dataset, Label, LabelSource, LabelVerdict, Sample
from edgedistill.images import load_image
from edgedistill.labelling import Labeler, run_labeler
from edgedistill.openai_api import CHAT, ApiClient
from edgedistill.recipe import DetectionClass, VerifySettings

PROMPT_VERSION = 1  # raise when the prompt changes: answers to the old one are not reused
IMAGE_TOKENS = {"low": 85}  # what the API charges for one low-detail image
INSTRUCTIONS = (
    "You check the labels of a training set for an object detector. Each numbered box drawn on the image "
    "was labelled with a class by a detector. For every box, answer 'accept' when it tightly holds an object "
    "of its class, 'relabel' with the right class_name when it holds an object of another class of the list, "
    "or 'reject' when it holds none of the classes or misses the object. Give a short reason for each.")


class BoxVerdict(BaseModel):
    box: int
    verdict: Literal["accept", "relabel", "reject"]
    class_name: str | None
    reason: str


class Verdicts(BaseModel):
    labels: list[BoxVerdict]


def checked(label: Label) -> bool:
    """A label the verifier looks at: a box a model made (people's labels have no score)."""
    return label.box is not None and label.score is not None


class VerifyLabeler(Labeler):
    """Gives each model-made box of an image the verdict of a vision-language model."""

    shard_size = 16

    def __init__(self, ontology: dict[str, DetectionClass], settings: VerifySettings):
        self.ontology, self.settings = ontology, settings

    def load(self) -> None:
        self.client = ApiClient(self.settings)
        self.source = LabelSource(labeler="verifier", model=self.settings.model, version=f"prompt-{PROMPT_VERSION}")

    def wants(self, sample: Sample) -> bool:
        return sample.kind == "image" and sample.review.status == "auto" and any(map(checked, sample.labels))

    def request(self, sample: Sample) -> dict[str, Any]:
        """What determines the request for `sample` (its cache key): the image, its boxes, the question."""
        boxes = [(label.class_name, label.box) for label in sample.labels if checked(label)]
        return {"prompt": PROMPT_VERSION, "media": sample.media, "boxes": boxes,
                "classes": {name: spec.prompts for name, spec in self.ontology.items()},
                "detail": self.settings.detail, "max_side": self.settings.max_side,
                "max_answer_tokens": self.settings.max_answer_tokens}

    def label(self, dataset: Dataset, samples: list[Sample]) -> list[Sample]:
        return self.client.map(lambda sample: self._verified(dataset, sample), samples)

    def _verified(self, dataset: Dataset, sample: Sample) -> Sample:
        answer = self.client.chat_json(dataset.store, self.request(sample),
                                       lambda: self.messages(load_image(dataset.media_path(sample)), sample),
                                       Verdicts, self.settings.max_answer_tokens)
        return with_verdicts(sample, Verdicts.model_validate(answer.content), self.source)

    def messages(self, image: np.ndarray, sample: Sample) -> list[dict[str, Any]]:
        boxes = [label for label in sample.labels if checked(label)]
        classes = "\n".join(f"- {name}: {', '.join(spec.prompts)}" for name, spec in self.ontology.items())
        listed = "\n".join(f"{number}: {label.class_name} at x={label.box[0]:.0f}, y={label.box[1]:.0f}, "
                           f"width={label.box[2]:.0f}, height={label.box[3]:.0f}"
                           for number, label in enumerate(boxes, start=1))
        url = "data:image/jpeg;base64," + base64.b64encode(numbered_boxes(image, boxes, self.settings.max_side)).decode()
        return [{"role": "system", "content": INSTRUCTIONS},
                {"role": "user", "content": [
                    {"type": "text", "text": f"Classes:\n{classes}\n\nBoxes (in the image's {image.shape[1]}x"
                                             f"{image.shape[0]} pixels):\n{listed}"},
                    {"type": "image_url", "image_url": {"url": url, "detail": self.settings.detail}}]}]

    def most_tokens(self, sample: Sample) -> tuple[int, int]:
        """The most one request can cost, in input and output tokens: what the budget plans with."""
        text = len(INSTRUCTIONS) + 80 * (len(self.ontology) + sum(map(checked, sample.labels))) + 100
        longest = self.settings.max_side
        tiles = -(-min(longest, 768) // 512) * -(-longest // 512)  # high detail: 170 tokens a 512 px tile
        image = IMAGE_TOKENS.get(self.settings.detail, 85 + 170 * tiles)
        return text // 3 + image, self.settings.max_answer_tokens


def numbered_boxes(image: np.ndarray, boxes: list[Label], max_side: int) -> bytes:
    """The image scaled to fit `max_side`, each box drawn with its number (1, 2, ...), as JPEG."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    canvas = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                        interpolation=cv2.INTER_AREA) if scale < 1 else image.copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 300))
    for number, label in enumerate(boxes, start=1):
        x, y, w, h = (v * scale for v in label.box)
        corner = (round(x), round(y))
        cv2.rectangle(canvas, corner, (round(x + w), round(y + h)), (255, 40, 40), thickness)
        text_at = (corner[0] + 2, max(corner[1] - 3, 12))
        cv2.putText(canvas, str(number), text_at, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), thickness + 2)
        cv2.putText(canvas, str(number), text_at, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 40, 40), thickness)
    return cv2.imencode(".jpg", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def with_verdicts(sample: Sample, answer: Verdicts, by: LabelSource) -> Sample:
    """The sample with each checked label given its box's verdict; a box the answer skipped stays unchecked."""
    said = {verdict.box: verdict for verdict in answer.labels}
    labels, number = [], 0
    for label in sample.labels:
        if checked(label):
            number += 1
            if number in said:
                label = _judged(label, said[number], by)
        labels.append(label)
    return sample.model_copy(update={"labels": labels})


def _judged(label: Label, said: BoxVerdict, by: LabelSource) -> Label:
    if said.verdict == "relabel" and said.class_name and said.class_name != label.class_name:
        verdict = LabelVerdict(outcome="relabelled", reason=said.reason, by=by, was=label.class_name)
        return label.model_copy(update={"class_name": said.class_name, "verdict": verdict})
    outcome = "rejected" if said.verdict == "reject" else "accepted"  # a relabel to its own class accepts it
    return label.model_copy(update={"verdict": LabelVerdict(outcome=outcome, reason=said.reason, by=by)})


def verify_labels(dataset: Dataset, samples: list[Sample], ontology: dict[str, DetectionClass],
                  settings: VerifySettings, work_dir: Path,
                  progress: Callable[[int, int], None] | None = None) -> tuple[list[Sample], dict[str, Any]]:
    """The samples with their auto-labels verified, as far as the budget goes, and a report of verdicts,
    requests, tokens and cost. Images the budget does not reach keep their labels unchecked."""
    labeler = VerifyLabeler(ontology, settings)
    client = ApiClient(settings)  # a missing key is an error before any work
    wanted = [s for s in samples if labeler.wants(s)]
    requests = [labeler.request(s) for s in wanted]
    plan = client.budgeted(dataset.store, CHAT, requests, [labeler.most_tokens(s) for s in wanted])
    run = run_labeler(labeler, dataset, [s for i, s in enumerate(wanted) if i in plan.chosen], work_dir, progress)
    verified = {s.id: s for s in run.samples}
    result = [verified.get(s.id, s) for s in samples]
    usage = client.spent(dataset.store, CHAT, requests, plan)
    outcomes: dict[str, int] = {"accepted": 0, "relabelled": 0, "rejected": 0}
    for sample in result:
        for label in sample.labels:
            if label.verdict is not None and label.verdict.by.labeler == "verifier":
                outcomes[label.verdict.outcome] += 1
    report = {"model": settings.model, "base_url": client.base_url, "images_checked": len(plan.chosen),
              "images_left_unchecked": len(plan.left), "labels": outcomes,
              "api_usage": {"verify": usage.as_dict()}}
    return result, report
