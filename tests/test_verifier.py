"""The vision-language verifier against an OpenAI-compatible server on loopback (tests/openai_server.py),
through the real `openai` client: verdicts applied with their reasons and nothing deleted, doubted
samples routed to review and rejected boxes kept out of training, every answer cached (a rerun asks
nothing), the budget planned before any request, and each fault a clear error that keeps finished work."""

import base64
import json
import logging

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from edgedistill.boxes import Detections
from edgedistill.dataset import Dataset, ImageShape, Label, LabelSource, OntologyClass, Provenance, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.openai_api import CACHE
from edgedistill.recipe import DetectionClass, ReviewSettings, VerifySettings
from flows.cli import app
from labelers.label_studio import make_task, route
from labelers.verifier import verify_labels
from openai_server import KEY, OpenAiServer

ONTOLOGY = {"cat": DetectionClass(prompts=["a cat"]), "dog": DetectionClass(prompts=["a dog"])}
OWL = LabelSource(labeler="owlv2", model="tiny")
PERSON = LabelSource(labeler="label-studio", model="human review")
# the truth the server answers with, by the box's top-left corner
TRUTH = {(10, 10): ("accept", None, "a cat fills the box"), (60, 20): ("relabel", "dog", "that is a dog"),
         (5, 40): ("reject", None, "empty floor"), (30, 30): ("accept", None, "a cat")}


def truth(class_name, box):
    verdict, new_class, reason = TRUTH[box[:2]]
    return {"verdict": verdict, "class_name": new_class or class_name, "reason": reason}


def _auto(class_name, box, score=0.6):
    return Label(class_name=class_name, box=box, score=score, source=OWL)


@pytest.fixture
def labelled(tmp_path):
    """Four photos: two auto boxes (a cat, and a dog called a cat); an empty box; a person's box only; one cat."""
    dataset = Dataset.create(tmp_path / "pets", "pets", "detection", [OntologyClass(name=n) for n in ONTOLOGY])
    boxes = [[_auto("cat", (10, 10, 30, 30)), _auto("cat", (60, 20, 25, 25))],
             [_auto("cat", (5, 40, 20, 10), score=0.3)],
             [Label(class_name="dog", box=(1, 1, 10, 10), source=PERSON)],
             [_auto("cat", (30, 30, 20, 20))]]
    samples = []
    for seed, labels in enumerate(boxes):
        pixels = np.random.default_rng(seed).integers(0, 255, (80, 100, 3), np.uint8)
        encoded = cv2.imencode(".png", pixels)[1].tobytes()
        digest, media = dataset.add_media(encoded, "png")
        samples.append(Sample(id=digest[:16], media=media, kind="image", shape=ImageShape(width=100, height=80),
                              provenance=Provenance(source="photos"), labels=labels))
    return dataset, samples


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


def _settings(server, **changes):
    return VerifySettings(**{"enabled": True, "base_url": server.url, "retries": 2, "timeout": 5, **changes})


def test_verdicts_come_back_with_reasons_nothing_is_deleted_and_a_rerun_asks_nothing(labelled, key, tmp_path,
                                                                                    caplog):
    dataset, samples = labelled
    caplog.set_level(logging.DEBUG)
    with OpenAiServer(truth) as server:
        result, report = verify_labels(dataset, samples, ONTOLOGY, _settings(server), tmp_path / "work")
        asked = server.chat_requests()
        assert len(asked) == 3  # the photo with only a person's box is not sent
        again, second = verify_labels(dataset, samples, ONTOLOGY, _settings(server), tmp_path / "again")
        assert len(server.chat_requests()) == 3  # every answer came from the cache
    cat_and_dog, empty, persons, cat = result
    assert [(l.class_name, l.verdict.outcome, l.verdict.was, l.verdict.reason) for l in cat_and_dog.labels] == [
        ("cat", "accepted", None, "a cat fills the box"), ("dog", "relabelled", "cat", "that is a dog")]
    assert [(l.class_name, l.box, l.verdict.outcome) for l in empty.labels] == [("cat", (5, 40, 20, 10), "rejected")]
    assert persons == samples[2] and cat.labels[0].verdict.outcome == "accepted"
    assert {l.verdict.by.labeler for s in (cat_and_dog, empty, cat) for l in s.labels} == {"verifier"}
    # the doubted samples go to people; a rejected box stays out of training until they decide
    settings = ReviewSettings(threshold=0.2, qc_share=0.0)
    assert [route(s, settings) for s in result] == ["doubtful", "doubtful", "auto", "auto"]
    task = make_task(dataset, cat_and_dog, dataset.commit(result, None, "verify", {}), "doubtful", "/data/x.png")
    assert task["data"]["verifier"] == "dog: relabelled (was cat): that is a dog"  # beside the photo, for people
    assert "verifier" not in make_task(dataset, cat, dataset.head, "doubtful", "/data/y.png")["data"]
    assert len(Detections.from_labels(empty.labels, list(ONTOLOGY))) == 0
    assert list(Detections.from_labels(cat_and_dog.labels, list(ONTOLOGY)).class_ids) == [0, 1]

    tokens_in, tokens_out = (300 + 40 * 2) + 2 * (300 + 40), 25 * 2 + 2 * 25
    assert report == {"model": "gpt-4o-mini", "base_url": server.url, "images_checked": 3, "images_left_unchecked": 0,
                      "labels": {"accepted": 2, "relabelled": 1, "rejected": 1},
                      "api_usage": {"verify": {"asked": 3, "from_cache": 0, "input_tokens": tokens_in,
                                               "output_tokens": tokens_out, "characters": 0,
                                               "cost": pytest.approx((tokens_in * 0.15 + tokens_out * 0.60) / 1e6)}}}
    assert again == result
    assert second["api_usage"]["verify"] == {"asked": 0, "from_cache": 3, "input_tokens": 0, "output_tokens": 0,
                                             "characters": 0, "cost": 0.0}

    # what went out: structured outputs with the ontology's classes, the image with its boxes as a JPEG
    (request,) = [r for r in asked if "2: cat" in r["messages"][1]["content"][0]["text"]]  # asked concurrently
    assert request["model"] == "gpt-4o-mini"
    schema = request["response_format"]["json_schema"]
    assert schema["strict"] is True and schema["schema"]["additionalProperties"] is False
    text, image = request["messages"][1]["content"]
    assert "- cat: a cat\n- dog: a dog" in text["text"] and "2: cat at x=60, y=20, width=25, height=25" in text["text"]
    assert image["image_url"]["detail"] == "low"
    jpeg = base64.b64decode(image["image_url"]["url"].removeprefix("data:image/jpeg;base64,"))
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (80, 100, 3)
    # the key went in the header only: never into the cache, the report or the log
    assert all(r["authorization"] == f"Bearer {KEY}" for r in server.requests)
    cached = [p.read_text() for p in (tmp_path / "pets" / CACHE).rglob("*.json")]
    assert len(cached) == 3 and not any(KEY in text for text in cached)
    assert KEY not in json.dumps(report) and KEY not in caplog.text


def test_the_budget_is_planned_before_any_request_and_cached_answers_are_free(labelled, key, tmp_path):
    dataset, samples = labelled
    with OpenAiServer(truth) as server:
        _, report = verify_labels(dataset, samples, ONTOLOGY, _settings(server, max_requests=1), tmp_path / "a")
        assert len(server.chat_requests()) == 1
        assert (report["images_checked"], report["images_left_unchecked"]) == (1, 2)
        # a larger budget later: the first answer is free, two more are asked
        result, report = verify_labels(dataset, samples, ONTOLOGY, _settings(server, max_requests=2), tmp_path / "b")
        assert len(server.chat_requests()) == 3
        assert report["api_usage"]["verify"]["asked"] == 2 and report["api_usage"]["verify"]["from_cache"] == 1
        assert report["images_left_unchecked"] == 0
        # no money at all: nothing is asked, and nothing is lost
        _, nothing = verify_labels(Dataset.open(dataset.location), samples, ONTOLOGY,
                                   _settings(server, max_cost=0.0, model="gpt-4o"), tmp_path / "c")
        assert (nothing["images_checked"], nothing["images_left_unchecked"]) == (0, 3)
        assert len(server.chat_requests()) == 3
        # a cost budget needs the model's prices
        with pytest.raises(EdgedistillError, match="prices of model my-vlm are unknown"):
            verify_labels(dataset, samples, ONTOLOGY, _settings(server, max_cost=1.0, model="my-vlm"), tmp_path / "d")
        _, priced = verify_labels(dataset, samples, ONTOLOGY, _settings(
            server, model="my-vlm", price_input=1.0, price_output=1.0, max_cost=0.0021), tmp_path / "e")
        assert priced["images_checked"] == 1  # each request may cost up to 0.001 + 0.001 USD: one fits
    assert result[0].labels[1].class_name == "dog"


def test_retries_honour_the_server_and_what_stays_wrong_is_a_clear_error(labelled, key, tmp_path):
    dataset, samples = labelled
    one = [samples[3]]
    with OpenAiServer(truth, timeout_seconds=1.0) as server:
        server.faults.extend(["429", "500", "garbage"])  # two retried by the client, one answer asked again
        result, report = verify_labels(dataset, one, ONTOLOGY, _settings(server), tmp_path / "a")
        assert len(server.chat_requests()) == 4 and report["labels"]["accepted"] == 1

        fresh = [samples[1]]
        server.faults.extend(["500"] * 3)
        with pytest.raises(EdgedistillError, match=r"answered HTTP 500 \(3 tries\)"):
            verify_labels(dataset, fresh, ONTOLOGY, _settings(server), tmp_path / "b")
        server.faults.extend(["garbage"] * 3)
        with pytest.raises(EdgedistillError, match="answered 3 times with something other than the JSON") as raised:
            verify_labels(dataset, fresh, ONTOLOGY, _settings(server), tmp_path / "c")
        assert "structured outputs" in raised.value.hint
        server.faults.extend(["timeout"])
        with pytest.raises(EdgedistillError, match=r"did not answer within 0.3 s \(1 tries\)"):
            verify_labels(dataset, fresh, ONTOLOGY, _settings(server, timeout=0.3, retries=0), tmp_path / "d")
        server.faults.extend(["404"])
        with pytest.raises(EdgedistillError, match="does not know model gpt-4o-mini"):
            verify_labels(dataset, fresh, ONTOLOGY, _settings(server), tmp_path / "e")
        server.faults.extend(["401"])
        with pytest.raises(EdgedistillError, match="refused the API key in OPENAI_API_KEY"):
            verify_labels(dataset, fresh, ONTOLOGY, _settings(server), tmp_path / "f")
        with pytest.raises(EdgedistillError, match=r"cannot reach http://127.0.0.1:9/v1 \(1 tries\)"):
            verify_labels(dataset, fresh, ONTOLOGY, _settings(server, base_url="http://127.0.0.1:9/v1", retries=0),
                          tmp_path / "nobody")
        # nothing was cached for the failed photo: the next run asks again, and gets its answer
        done, _ = verify_labels(dataset, fresh, ONTOLOGY, _settings(server), tmp_path / "g")
        assert done[0].labels[0].verdict.outcome == "rejected"


def test_requests_in_flight_are_bounded_by_concurrency(labelled, key, tmp_path):
    dataset, samples = labelled
    with OpenAiServer(truth, delay_seconds=0.3) as server:
        _, report = verify_labels(dataset, samples, ONTOLOGY, _settings(server, concurrency=2), tmp_path / "work")
    assert report["api_usage"]["verify"]["asked"] == 3 and server.most_in_flight == 2


def test_no_key_is_a_clear_error_before_any_request(labelled, monkeypatch, tmp_path):
    dataset, samples = labelled
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAiServer(truth) as server:
        with pytest.raises(EdgedistillError, match="no API key .* OPENAI_API_KEY is not set") as raised:
            verify_labels(dataset, samples, ONTOLOGY, _settings(server), tmp_path / "work")
        assert server.requests == []
    assert "Prefect Secret block named 'openai-api-key'" in raised.value.hint


def test_the_detection_label_step_verifies_the_auto_labels_once(key, tmp_path):
    from edgedistill.recipe import parse_recipe
    from flows import detection
    from flows.runs import RunPaths, dataset_ref
    from tiny_models import save_tiny_owl

    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        pixels = np.random.default_rng(seed).integers(0, 255, (64, 80, 3), np.uint8)
        Image.fromarray(pixels).save(photos / f"photo{seed}.png")

    def left_is_wrong(class_name, box):
        return ({"verdict": "reject", "class_name": None, "reason": "nothing there"} if box[0] < 20 else
                {"verdict": "accept", "class_name": class_name, "reason": "fine"})

    with OpenAiServer(left_is_wrong) as server:
        spec = {"task": "detection", "name": "pets", "classes": {"cat": ["a cat"], "dog": ["a dog"]},
                "images": str(photos), "compositing": {"enabled": False},
                "autolabel": {"labeler": "owlv2", "model": str(save_tiny_owl(tmp_path / "owl")), "threshold": 0.0},
                "verify": {"enabled": True, "base_url": server.url, "max_requests": 10}}
        recipe = parse_recipe(spec)
        paths = RunPaths.of(recipe, tmp_path / "run")
        detection.generate(recipe, paths)
        split = detection.label(recipe, paths)
        assert len(server.chat_requests()) == 3
        # the CLI finds the same versions, asks nothing, and shows what the verification said and cost
        (tmp_path / "pets.yaml").write_text(yaml.safe_dump(spec))
        shown = CliRunner().invoke(app, ["label", str(tmp_path / "pets.yaml"), "--out", str(tmp_path / "run")],
                                   env={"COLUMNS": "160"})
        assert shown.exit_code == 0, shown.output
        assert len(server.chat_requests()) == 3
    dataset = Dataset.open(paths.dataset)
    stages = {v.id: v for v in dataset.info.versions}
    verified = stages[dataset.version(split).parent]
    assert (verified.stage, stages[verified.parent].stage) == ("verify", "autolabel")
    auto = [label for s in dataset.samples(verified.parent) for label in s.labels]
    assert auto and all(label.verdict is None for label in auto)
    labels = [label for s in dataset.samples(split) for label in s.labels]
    assert [label.box for label in labels] == [label.box for label in auto]  # nothing deleted
    rejected = [label for label in labels if label.verdict.outcome == "rejected"]
    assert len(rejected) == sum(label.box[0] < 20 for label in auto)
    report = dataset.report(verified)
    assert report["labels"] == {"accepted": len(labels) - len(rejected), "relabelled": 0, "rejected": len(rejected)}
    assert report["api_usage"]["verify"]["asked"] == 3 and verified.params["verify"]["max_requests"] == 10
    # what a bundle trained on the split will say the API calls behind it cost
    assert dataset_ref(dataset, dataset.version(split))["api_usage"] == report["api_usage"]
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in shown.output.splitlines()
            if line.count("│") == 3}
    cost = (report["api_usage"]["verify"]["input_tokens"] * 0.15 + report["api_usage"]["verify"]["output_tokens"] * 0.60) / 1e6
    assert {k: rows[k] for k in ("labels rejected", "images checked", "requests asked / answered from cache",
                                 "estimated cost")} == {"labels rejected": str(len(rejected)), "images checked": "3",
                                                        "requests asked / answered from cache": "3 / 0",
                                                        "estimated cost": f"${cost:.4f}"}


def test_the_closing_table_says_what_the_api_calls_cost():
    from edgedistill.bundle import BundleFile, Manifest
    from flows.run import summary_rows

    manifest = Manifest.model_construct(
        files=[BundleFile(path="m.tflite", sha256="0" * 64, bytes=2048, role="model_int8")], metrics={}, targets={},
        dataset={"api_usage": {"verify": {"asked": 3, "from_cache": 1, "input_tokens": 900, "output_tokens": 90,
                                          "characters": 0, "cost": 0.000189},
                               "openai": {"asked": 8, "from_cache": 0, "input_tokens": 0, "output_tokens": 0,
                                          "characters": 40, "cost": None}}})
    rows = dict(summary_rows(manifest, "bundle"))
    assert rows["API verify: requests (from cache), estimated cost"] == "3 (1), $0.0002"
    assert rows["API openai: requests (from cache), estimated cost"] == "8 (0), unknown cost"
