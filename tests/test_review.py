"""The Label Studio review round trip against a real Label Studio (started once for this module).

Reviewers' work is done through Label Studio's API as the UI would do it: annotations that keep,
move, relabel or reject the predictions. The server needs `bash scripts/install-label-studio.sh`;
without it these tests are skipped with that hint.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgedistill.dataset import (Dataset, ImageShape, Label, LabelSource, OntologyClass, Provenance, Sample)
from edgedistill.errors import EdgedistillError
from edgedistill.recipe import ReviewSettings
from edgedistill.formats.label_studio import brush_to_mask, coco_to_brush
from edgedistill.masks import decode_rle, encode_rle
from labelers.label_studio import (BOX, MASK, REJECT, VERDICT, Connection, config_problems, existing_tasks,
                                   label_config, pull_reviews, push_for_review, route)
from labelers.teachers import find_packaged, get_adapter
from photos import real_photos

OWL = LabelSource(labeler="owlv2", model="tiny-random", version="1")
WHISPER = LabelSource(labeler="whisper_check", model="tiny.en")


# -- the server ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """One real Label Studio for the module; its document root is the folder holding the datasets."""
    from labelers.label_studio_server import label_studio_command, start_label_studio

    try:
        label_studio_command()
    except EdgedistillError as error:
        pytest.skip(f"{error.problem}: {error.hint}")
    base = tmp_path_factory.mktemp("review")
    os.environ["USE_DEFAULT_BANNED_SUBNETS"] = "false"  # so it may reach the S3 server on 127.0.0.1 below
    server = start_label_studio(base / "ls-data", document_root=base)
    os.environ.pop("USE_DEFAULT_BANNED_SUBNETS")
    os.environ["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(base)
    yield server, base
    server.stop()
    os.environ.pop("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", None)
    assert server.process.poll() is not None


@pytest.fixture(scope="module")
def s3_bucket(s3_endpoint):
    """An empty bucket for the module; yields (endpoint, bucket)."""
    import fsspec

    fsspec.filesystem("s3", endpoint_url=s3_endpoint).mkdir("review-media")
    return s3_endpoint, "review-media"


@pytest.fixture(scope="module")
def client(label_studio):
    from label_studio_sdk import LabelStudio

    server, _ = label_studio
    return LabelStudio(base_url=server.url, api_key=server.token)


def _connection(label_studio) -> Connection:
    server, _ = label_studio
    return Connection(url=server.url, token=server.token)


# -- datasets made by hand -------------------------------------------------------------------------
def _image(dataset: Dataset, seed: int) -> tuple[str, str]:
    pixels = np.random.default_rng(seed).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return dataset.add_media(buffer.getvalue(), "png")


def _mask(box: tuple[int, int, int, int]) -> dict:
    mask = np.zeros((60, 80), dtype=bool)
    x, y, w, h = box
    mask[y:y + h, x:x + w] = True
    return encode_rle(mask)


def detection_dataset(root: Path, scores: list[float | None], masks: bool = True, name: str | None = None) -> Dataset:
    """A cat (scored) and a dog per photo, or no labels where the score is None; committed as labelling's
    `split` version is."""
    dataset = Dataset.create(root, name or root.name, "detection", [OntologyClass(name="cat"), OntologyClass(name="dog")])
    samples = []
    for index, score in enumerate(scores):
        digest, media = _image(dataset, index)
        box = (10 + index, 8, 30, 20)
        labels = [Label(class_name="cat", box=box, score=score, source=OWL,
                        mask=_mask(box) if masks and index % 2 == 0 else None),
                  Label(class_name="dog", box=(50, 30, 20, 25), score=0.95, source=OWL)] if score is not None else []
        samples.append(Sample(id=digest[:16], media=media, kind="image", shape=ImageShape(width=80, height=60),
                              provenance=Provenance(source="test", seed=index), labels=labels))
    dataset.commit(samples, None, "split", {"scores": scores})
    return dataset


def keyword_dataset(root: Path, audio_sample_factory, scores: list[float]) -> Dataset:
    dataset = Dataset.create(root, root.name, "keyword_spotting",
                             [OntologyClass(name=n) for n in ("yes", "no", "_unknown_", "_silence_")])
    samples = []
    for index, score in enumerate(scores):
        made = audio_sample_factory(dataset, "yes", f"voice{index}", frequency=300.0 + 40 * index)
        label = Label(class_name="yes", span=(0.2, 0.7), transcript="yes", score=score, source=WHISPER)
        samples.append(made.model_copy(update={"labels": [label]}))
    dataset.commit(samples, None, "whisper_check", {})
    return dataset


def annotate(client, task, result: list[dict]) -> None:
    """What a reviewer's Submit does."""
    client.annotations.create(id=task.id, result=result, lead_time=2.5)


def moved(region: dict, **value) -> dict:
    return {**region, "value": {**region["value"], **value}}


REJECTION = {"from_name": VERDICT, "to_name": "image", "type": "choices", "value": {"choices": [REJECT]}}


# -- without a server ------------------------------------------------------------------------------
def test_label_config_follows_the_ontology(tmp_path, audio_sample_factory):
    detection = detection_dataset(tmp_path / "det", [0.2])
    config = label_config(detection, masks=True)
    assert '<RectangleLabels name="box" toName="image"><Label value="cat"/><Label value="dog"/>' in config
    assert '<BrushLabels name="mask"' in config and '<BrushLabels' not in label_config(detection, masks=False)
    speech = keyword_dataset(tmp_path / "kws", audio_sample_factory, [0.2])
    config = label_config(speech)
    assert '<Audio name="audio" value="$audio"/>' in config and '<TextArea name="transcript"' in config
    assert '<Choice value="_silence_"/>' in config
    parsed = {"box": {"type": "RectangleLabels", "labels": ["cat"]}, VERDICT: {"type": "Choices", "labels": [REJECT]}}
    from labelers.label_studio import required_controls
    assert config_problems(parsed, required_controls(detection, masks=False)) == ["'box' lacks the labels ['dog']"]


def test_routing_sends_doubtful_samples_and_stable_quality_shares(tmp_path):
    scores = [*np.linspace(0.0, 0.99, 200), *[None] * 200]
    dataset = detection_dataset(tmp_path / "det", scores, masks=False)
    settings = ReviewSettings(threshold=0.5, qc_share=0.2, seed=3)
    routes = [route(s, settings) for s in dataset.samples()]
    doubtful = [r for s, r in zip(scores, routes) if s is not None and s < 0.5]
    confident = [r for s, r in zip(scores, routes) if s is not None and s >= 0.5]
    empty = [r for s, r in zip(scores, routes) if s is None]
    assert set(doubtful) == {"doubtful"}
    assert set(confident) == {"quality_check", "auto"} and 0.1 < confident.count("quality_check") / len(confident) < 0.3
    # photos with nothing found are not doubtful: a sampled share of them goes to people, under its own name
    assert set(empty) == {"nothing_found", "auto"} and 0.1 < empty.count("nothing_found") / len(empty) < 0.3
    assert routes == [route(s, settings) for s in dataset.samples()]  # the draw never changes
    assert "nothing_found" not in [route(s, settings.model_copy(update={"qc_share": 0.0})) for s in dataset.samples()]


def test_masks_survive_the_brush_format():
    mask = np.zeros((60, 80), dtype=bool)
    mask[5:40, 12:33] = True
    mask[50:55, 70:80] = True
    assert (brush_to_mask(coco_to_brush(encode_rle(mask)), 80, 60) == mask).all()
    assert (decode_rle({"size": [60, 80], "counts": encode_rle(mask)["counts"]}) == mask).all()


def test_wait_for_people_outside_a_flow_polls_until_done_or_the_timeout():
    from flows.review import wait_for_people
    from labelers.label_studio import ReviewProgress

    checks: list[float] = []

    def people_done_at_check(number: int):
        def check() -> ReviewProgress:
            checks.append(time.monotonic())
            return ReviewProgress(total=3, done=3 if len(checks) >= number else 1)
        return check

    # done at the fourth check (the first two come before any wait): returned then, not at the 30 s timeout
    started = time.monotonic()
    progress = wait_for_people(people_done_at_check(4), timeout_s=30, poll_s=0.1)
    assert progress == ReviewProgress(total=3, done=3) and len(checks) == 4
    assert all(later - earlier >= 0.1 for earlier, later in zip(checks[1:], checks[2:]))  # a poll's wait between
    assert time.monotonic() - started < 10
    # never done: it gives up once the 1.5 s timeout has passed, at the next poll, not before and not much after
    checks.clear()
    started = time.monotonic()
    progress = wait_for_people(people_done_at_check(10**6), timeout_s=1.5, poll_s=0.1)
    waited = time.monotonic() - started
    assert progress == ReviewProgress(total=3, done=1)
    assert 1.5 <= waited < 2.8  # twice the timeout would be 3 s
    assert all(later - earlier >= 0.1 for earlier, later in zip(checks[1:], checks[2:]))
    assert len(checks) <= 2 + 16  # at most one check per poll of the 1.5 s


def test_a_server_that_is_down_or_missing_settings_gives_a_clear_error(tmp_path, monkeypatch):
    from labelers.label_studio import connection_from_env
    from labelers.label_studio_server import free_port

    dataset = detection_dataset(tmp_path / "det", [0.1])
    down = Connection(url=f"http://127.0.0.1:{free_port()}", token="secret-token-1234")
    with pytest.raises(EdgedistillError, match="cannot reach Label Studio") as error:
        push_for_review(dataset, down, ReviewSettings(document_root=str(tmp_path)))
    assert "secret-token-1234" not in str(error.value) and "secret-token-1234" not in repr(down)
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(EdgedistillError, match="LABEL_STUDIO_URL"):
        connection_from_env()
    assert len(dataset.info.versions) == 1


def test_the_quality_table_reads_at_80_columns():
    from rich.console import Console

    from flows.review import quality_table

    figures = {"accepted": 120, "corrected": 33, "rejected": 4, "auto_accepted": 2177, "pending": 12,
               "precision": 0.8123, "recall": 0.91}
    screen = Console(width=80, record=True, file=io.StringIO())
    screen.print(quality_table({"per_class": {"person": figures, "traffic light": figures}}))
    lines = screen.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "counts are labels, not samples" in lines[0]
    header = next(line for line in lines if line.lstrip().startswith("class")).split()
    assert header == ["class", "accepted", "corrected", "rejected", "accepted", "pending", "precision", "recall"]
    assert "auto-" in lines[lines.index(next(l for l in lines if l.lstrip().startswith("class"))) - 1]
    assert next(line for line in lines if "traffic light" in line).split()[2:] == [
        "120", "33", "4", "2177", "12", "0.81", "0.91"]


OFFLINE_PROBE = """
import os, sys, label_studio
sys.path.insert(0, os.path.dirname(label_studio.__file__))
from django.conf import settings
print(repr((settings.SENTRY_DSN, settings.FRONTEND_SENTRY_DSN, settings.COLLECT_ANALYTICS,
            settings.LATEST_VERSION_CHECK)))
"""


def test_label_studio_starts_offline(tmp_path):
    """What Label Studio's own settings make of the environment edgedistill starts it in: no Sentry (server or
    browser), no usage analytics, no PyPI version check; also with a Sentry DSN elsewhere in the environment."""
    from labelers.label_studio_server import label_studio_command, server_environment

    try:
        python = label_studio_command().parent / "python"
    except EdgedistillError as error:
        pytest.skip(f"{error.problem}: {error.hint}")
    env = server_environment(tmp_path, tmp_path, {"password": "p", "token": "t"}) | {
        "SENTRY_DSN": "https://key@sentry.example/1", "DJANGO_SETTINGS_MODULE": "label_studio.core.settings.label_studio"}
    probe = subprocess.run([str(python), "-c", OFFLINE_PROBE], env=env, capture_output=True, text=True, timeout=120,
                           cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-3000:]
    # Label Studio's defaults would be two Sentry DSNs, True, True
    assert probe.stdout.strip().splitlines()[-1] == "('', '', False, False)"


# -- against the real server -----------------------------------------------------------------------
def test_detection_round_trip(label_studio, client):
    _, base = label_studio
    connection = _connection(label_studio)
    dataset = detection_dataset(base / "boxes", [0.1, 0.2, 0.3, 0.35, 0.9, 0.95])
    settings = ReviewSettings(threshold=0.5, qc_share=0.0)
    parent = dataset.version()

    pushed = push_for_review(dataset, connection, settings)
    assert (pushed.created_project, pushed.imported, pushed.routes["auto"]) == (True, 4, 2)
    again = push_for_review(dataset, connection, settings)
    assert (again.created_project, again.imported, again.already_there) == (False, 0, 4)

    samples = dataset.samples()
    tasks = existing_tasks(client, connection, pushed.project_id)
    assert set(tasks) == {s.id for s in samples[:4]}
    first = tasks[samples[0].id].predictions[0]
    assert first.model_version == "owlv2/tiny-random/1" and first.score == pytest.approx(0.1)
    regions = first.result
    assert {r["from_name"] for r in regions} == {BOX, MASK}
    # accept as predicted (masks included), correct (move the cat, drop the dog), reject, leave one
    annotate(client, tasks[samples[0].id], regions)
    cat, dog = [r for r in tasks[samples[1].id].predictions[0].result if r["from_name"] == BOX]
    annotate(client, tasks[samples[1].id], [moved(cat, x=50.0, rectanglelabels=["dog"])])
    annotate(client, tasks[samples[2].id], [*tasks[samples[2].id].predictions[0].result, REJECTION])

    pulled = pull_reviews(dataset, connection, settings)
    assert pulled.counts == {"accepted": 1, "corrected": 1, "rejected": 1, "auto_accepted": 2, "pending": 1,
                             "missing_task": 0}
    reviewed = {s.id: s for s in dataset.samples(pulled.version.id)}
    server, _ = label_studio
    accepted, corrected, rejected, pending = (reviewed[s.id] for s in samples[:4])
    assert accepted.review.status == "accepted" and accepted.review.reviewer == server.username
    assert accepted.labels == samples[0].labels  # the auto-labels, scores and masks kept
    assert corrected.review.status == "corrected" and corrected.review.at is not None
    assert [(l.class_name, l.source.labeler) for l in corrected.labels] == [("dog", "label-studio")]
    assert corrected.labels[0].box == pytest.approx((40.0, 8.0, 30.0, 20.0))
    assert rejected.review.status == "rejected" and rejected.labels == samples[2].labels
    assert dataset.media_path(rejected).exists()
    assert pending.review.status == "auto"
    assert {reviewed[s.id].review.reviewer for s in samples[4:]} == {"edgedistill:auto-accept"}
    cat_row = pulled.report["per_class"]["cat"]
    # two reviewed samples: one cat kept, one cat turned into a dog -> precision 1/2, recall 1/1
    assert (cat_row["accepted"], cat_row["corrected"], cat_row["rejected"]) == (1, 1, 1)
    assert (cat_row["precision"], cat_row["recall"]) == (0.5, 1.0)
    assert pulled.report["per_class"]["dog"]["recall"] == pytest.approx(1 / 2)

    assert dataset.samples(parent.id) == samples  # the pushed version is untouched
    assert pull_reviews(dataset, connection, settings).version.id == pulled.version.id  # nothing new: same version

    # a new sample in a later version: the next push adds just that one task
    digest, media = _image(dataset, 99)
    extra = samples[0].model_copy(update={"id": digest[:16], "media": media})
    dataset.commit([*samples, extra], parent.id, "auto_label_more", {})
    assert push_for_review(dataset, connection, settings).imported == 1


def test_media_go_to_an_s3_bucket_for_a_label_studio_elsewhere(label_studio, client, s3_bucket):
    import fsspec
    import httpx

    server, base = label_studio
    endpoint, bucket = s3_bucket
    connection = _connection(label_studio)
    dataset = detection_dataset(base / "in-the-cloud", [0.1, 0.2, 0.9])
    settings = ReviewSettings(threshold=0.5, qc_share=0.0, project="s3 media", media_store=f"s3://{bucket}/team/a",
                              media_store_endpoint=endpoint)
    pushed = push_for_review(dataset, connection, settings)
    assert pushed.imported == 2
    store = fsspec.filesystem("s3", endpoint_url=endpoint)
    routed = dataset.samples()[:2]
    assert sorted(store.find(f"{bucket}/team/a")) == sorted(f"{bucket}/team/a/{s.media}" for s in routed)
    storages = client.import_storage.s3.list(project=pushed.project_id)
    assert [(s.bucket, s.prefix, s.s3endpoint) for s in storages] == [(bucket, "team/a", endpoint)]
    tasks = existing_tasks(client, connection, pushed.project_id)
    for sample in routed:  # Label Studio hands the image out of the bucket, as a reviewer's browser gets it
        served = httpx.get(server.url + tasks[sample.id].data["image"], follow_redirects=True,
                           headers={"Authorization": f"Token {server.token}"})
        assert served.status_code == 200 and served.content == dataset.media_path(sample).read_bytes()

    stamps = {path: store.info(path)["LastModified"] for path in store.find(f"{bucket}/team/a")}
    again = push_for_review(dataset, connection, settings)
    assert (again.imported, again.already_there) == (0, 2)
    assert len(client.import_storage.s3.list(project=pushed.project_id)) == 1  # not connected twice
    store.invalidate_cache()
    assert {path: store.info(path)["LastModified"] for path in store.find(f"{bucket}/team/a")} == stamps

    with pytest.raises(EdgedistillError, match="not an s3:// URL"):
        push_for_review(dataset, connection, settings.model_copy(update={"media_store": "gs://elsewhere"}))
    with pytest.raises(EdgedistillError, match="cannot copy the media"):
        push_for_review(detection_dataset(base / "no-bucket", [0.1]), connection,
                        settings.model_copy(update={"media_store": "s3://no-such-bucket/x", "project": "s3 missing"}))
    keys = {key: os.environ.pop(key) for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    try:
        with pytest.raises(EdgedistillError, match="NoCredentialsError"):
            push_for_review(detection_dataset(base / "no-keys", [0.1]), connection,
                            settings.model_copy(update={"project": "s3 no keys"}))
    finally:
        os.environ.update(keys)


BUCKET_RECIPE = """
task: detection
name: bucket-faces
classes:
  face: ["face"]
images: {images}
dataset: {dataset}
autolabel:
  labeler: teacher
  teacher_adapter: blazeface_short_range
  threshold: 0.5
"""


@pytest.mark.skipif(find_packaged(get_adapter("blazeface_short_range").packaged) is None,
                    reason="BlazeFace weights missing: run `python -m labelers.teachers fetch` (make setup does)")
def test_a_dataset_in_a_bucket_is_reviewed_from_that_bucket(label_studio, client, bucket, tmp_path, monkeypatch):
    """The CLI makes and labels a dataset that lives in S3 from photos in S3 (worker processes store
    some); Label Studio reads its media straight from that bucket, and the reviews come back into it."""
    import fsspec
    import httpx
    from typer.testing import CliRunner

    from flows.review import review_app

    server, _ = label_studio
    location = f"{bucket}/teams/faces"
    photos = real_photos(tmp_path / "photos")
    for seed in range(30):  # past one shard of photos, so that worker processes store some
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            photos / f"noise-{seed}.png")
    store = fsspec.filesystem("s3")
    store.put(f"{photos}/", f"{bucket[5:]}/site-photos/", recursive=True)  # the team's photos are in the bucket too
    recipe = tmp_path / "faces.yaml"
    recipe.write_text(BUCKET_RECIPE.format(images=f"{bucket}/site-photos", dataset=location))
    for stage in ("generate", "label"):
        made = subprocess.run([sys.executable, "-m", "flows.cli", stage, str(recipe), "--out", str(tmp_path / "run")],
                              capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])
        assert made.returncode == 0, made.stderr[-3000:]
    assert not (tmp_path / "run" / "dataset").exists()
    dataset = Dataset.open(location)
    again = subprocess.run([sys.executable, "-m", "flows.cli", "generate", str(recipe), "--out", str(tmp_path / "run")],
                           capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])
    assert again.returncode == 0 and Dataset.open(location).info.versions == dataset.info.versions  # found, not redone
    samples = dataset.samples()
    assert len(samples) == 37 and sum(1 for s in samples if s.labels) >= 2  # the astronaut and the cameraman

    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    runner = CliRunner()
    before = set(store.find(bucket))
    pushed = runner.invoke(review_app, ["push", location, "--threshold", "1.0", "--qc-share", "1"])
    assert pushed.exit_code == 0, pushed.output
    assert set(store.find(bucket)) == before  # nothing copied: Label Studio reads the dataset's own media
    project = next(p for p in client.projects.list(title="edgedistill: bucket-faces"))
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    storages = client.import_storage.s3.list(project=project.id)
    assert [(s.bucket, s.prefix, s.s3endpoint) for s in storages] == [(bucket[5:], "teams/faces", endpoint)]
    tasks = existing_tasks(client, _connection(label_studio), project.id)
    assert set(tasks) == {s.id for s in samples}  # every sample: the photos with faces doubtful, the others sampled
    assert {s.id: tasks[s.id].data["route"] for s in samples} == {
        s.id: "doubtful" if s.labels else "nothing_found" for s in samples}
    for sample in samples[:2]:
        served = httpx.get(server.url + tasks[sample.id].data["image"], follow_redirects=True,
                           headers={"Authorization": f"Token {server.token}"})
        assert served.status_code == 200 and served.content == dataset.media_path(sample).read_bytes()

    for task in tasks.values():
        annotate(client, task, [{**REJECTION}])
    pulled = runner.invoke(review_app, ["pull", location, "--threshold", "1.0", "--qc-share", "1"])
    assert pulled.exit_code == 0, pulled.output
    reviewed = Dataset.open(location)
    assert reviewed.version().stage == "review" and reviewed.version().counts["review:rejected"] == 37
    assert f"report: {location}/reports/" in pulled.output.replace("\n", "")


def test_keyword_round_trip_through_the_cli(label_studio, client, audio_sample_factory, monkeypatch):
    from typer.testing import CliRunner

    from flows.review import review_app

    server, base = label_studio
    dataset = keyword_dataset(base / "words", audio_sample_factory, [0.2, 0.3, 0.4])
    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    runner = CliRunner()
    pushed = runner.invoke(review_app, ["push", dataset.location, "--threshold", "0.5"])
    assert pushed.exit_code == 0, pushed.output
    assert server.token not in pushed.output

    project = next(p for p in client.projects.list(title="edgedistill: words"))
    tasks = existing_tasks(client, _connection(label_studio), project.id)
    samples = dataset.samples()
    keep = tasks[samples[0].id].predictions[0].result
    assert [r["value"] for r in keep] == [{"choices": ["yes"]}, {"text": ["yes"]}]
    annotate(client, tasks[samples[0].id], keep)
    annotate(client, tasks[samples[1].id], [
        {"from_name": "keyword", "to_name": "audio", "type": "choices", "value": {"choices": ["no"]}},
        {"from_name": "transcript", "to_name": "audio", "type": "textarea", "value": {"text": ["no way"]}}])
    annotate(client, tasks[samples[2].id], [{**REJECTION, "to_name": "audio"}])

    pulled = runner.invoke(review_app, ["pull", dataset.location, "--threshold", "0.5"])
    assert pulled.exit_code == 0, pulled.output
    assert server.token not in pulled.output
    reviewed = Dataset.open(dataset.location).samples()
    assert [s.review.status for s in reviewed] == ["accepted", "corrected", "rejected"]
    assert (reviewed[1].labels[0].class_name, reviewed[1].labels[0].transcript) == ("no", "no way")
    report = Dataset.open(dataset.location).report(Dataset.open(dataset.location).version())
    assert report["per_class"]["yes"]["precision"] == 0.5


def test_wrong_token_is_refused_clearly(label_studio, tmp_path):
    server, base = label_studio
    dataset = detection_dataset(base / "refused", [0.1])
    with pytest.raises(EdgedistillError, match="refused the token") as error:
        push_for_review(dataset, Connection(url=server.url, token="0" * 40), ReviewSettings())
    assert "0" * 40 not in str(error.value)


def test_an_edited_label_config_is_never_overwritten(label_studio, client):
    _, base = label_studio
    connection = _connection(label_studio)
    dataset = detection_dataset(base / "edited", [0.1, 0.2], masks=False)
    settings = ReviewSettings(project="edited by hand")
    pushed = push_for_review(dataset, connection, settings)
    # a person adds an instruction: still fits, left alone
    fitting = label_config(dataset).replace("<View>", '<View><Header value="Look closely"/>', 1)
    client.projects.update(pushed.project_id, label_config=fitting)
    assert push_for_review(dataset, connection, settings).config_edited
    # a person removes the class "dog": push and pull refuse, and the dataset is untouched
    broken = fitting.replace('<Label value="dog"/>', "")
    client.projects.update(pushed.project_id, label_config=broken)
    versions = list(dataset.info.versions)
    for step in (push_for_review, pull_reviews):
        with pytest.raises(EdgedistillError, match="labelling config .* was changed"):
            step(dataset, connection, settings)
    assert client.projects.get(pushed.project_id).label_config == broken
    assert Dataset.open(dataset.location).info.versions == versions


def test_a_task_deleted_in_the_ui_is_reported_and_pushed_again(label_studio, client):
    _, base = label_studio
    connection = _connection(label_studio)
    dataset = detection_dataset(base / "deleted", [0.1, 0.2], masks=False)
    settings = ReviewSettings()
    pushed = push_for_review(dataset, connection, settings)
    samples = dataset.samples()
    tasks = existing_tasks(client, connection, pushed.project_id)
    annotate(client, tasks[samples[0].id], tasks[samples[0].id].predictions[0].result)
    client.tasks.delete(str(tasks[samples[1].id].id))
    pulled = pull_reviews(dataset, connection, settings)
    assert pulled.missing == [samples[1].id]
    kept = dataset.samples(pulled.version.id)[1]
    assert kept.labels == samples[1].labels and kept.review.status == "auto"
    assert push_for_review(dataset, connection, settings).imported == 1


def test_the_cli_reviews_the_labelled_version_of_a_run_folder(label_studio, client, monkeypatch):
    """`review push|pull RUN` (the folder `edgedistill run --out` made) reviews its dataset's labelled (split)
    version, not the composites training derived from it; photos with nothing found go as their own sampled
    group, not as doubtful ones."""
    from typer.testing import CliRunner

    from flows.review import review_app

    server, base = label_studio
    dataset = detection_dataset(base / "team-run" / "dataset", [0.1, 0.2, 0.9, *[None] * 40], masks=False,
                                name="team-run")
    labelled = dataset.version()
    samples = dataset.samples()
    digest, media = _image(dataset, 500)  # a composite: doubtful-looking, but made for training, not for people
    composite = samples[0].model_copy(update={"id": digest[:16], "media": media,
                                              "provenance": Provenance(source="compositing", seed=500)})
    dataset.commit([*samples, composite], labelled.id, "composite", {})
    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    runner = CliRunner()
    options = ["--threshold", "0.5", "--qc-share", "0.25"]
    settings = ReviewSettings(threshold=0.5, qc_share=0.25)

    pushed = runner.invoke(review_app, ["push", str(base / "team-run"), *options])
    assert pushed.exit_code == 0, pushed.output
    output = " ".join(pushed.output.split())
    assert f"reviewing version {labelled.id} (split)" in output and "the newest labelled version" in output
    routes = {s.id: route(s, settings) for s in samples}
    sampled_empty = sum(1 for r in routes.values() if r == "nothing_found")
    assert routes[samples[0].id] == routes[samples[1].id] == "doubtful" and 3 <= sampled_empty <= 18
    assert re.search(rf"doubtful labels\s*│\s*2\b", output) and re.search(
        rf"nothing found \(sampled\)\s*│\s*{sampled_empty}\b", output), output
    project = next(p for p in client.projects.list(title="edgedistill: team-run"))
    tasks = existing_tasks(client, _connection(label_studio), project.id)
    assert {sid: task.data["route"] for sid, task in tasks.items()} == {
        sid: why for sid, why in routes.items() if why != "auto"}  # the composite is not among them

    annotate(client, tasks[samples[0].id], tasks[samples[0].id].predictions[0].result)
    pulled = runner.invoke(review_app, ["pull", str(base / "team-run"), *options])
    assert pulled.exit_code == 0, pulled.output
    reopened = Dataset.open(dataset.location)
    reviewed = reopened.version()
    assert (reviewed.stage, reviewed.parent) == ("review", labelled.id)
    assert composite.id not in {s.id for s in reopened.samples(reviewed.id)}
    output = " ".join(pulled.output.split())
    assert "counts are labels, not samples" in output
    assert f"made from {labelled.id} (split); samples: accepted 1, corrected 0, rejected 0, auto accepted " in output


def test_a_copy_of_a_dataset_elsewhere_is_another_dataset(label_studio, client):
    """Projects are found by the dataset's location, not its name: a copy in another folder has the same name
    and sample ids, but never reads the original's reviews."""
    _, base = label_studio
    connection = _connection(label_studio)
    settings = ReviewSettings()
    original = detection_dataset(base / "team-a" / "twin", [0.1, 0.2], masks=False)
    pushed = push_for_review(original, connection, settings)
    for task in existing_tasks(client, connection, pushed.project_id).values():
        annotate(client, task, [REJECTION])
    shutil.copytree(base / "team-a" / "twin", base / "team-b" / "twin")
    copy = Dataset.open(base / "team-b" / "twin")

    with pytest.raises(EdgedistillError, match="never pushed") as error:
        pull_reviews(copy, connection, settings)
    assert f"reviews {original.location}" in str(error.value.problem) and "review push" in error.value.hint
    assert Dataset.open(copy.location).info.versions == original.info.versions  # nothing written

    again = push_for_review(copy, connection, settings)
    assert again.project_id != pushed.project_id and (again.created_project, again.imported) == (True, 2)
    assert re.fullmatch(r"edgedistill: twin \([0-9a-f]{6}\)", client.projects.get(again.project_id).title)
    assert push_for_review(copy, connection, settings).project_id == again.project_id  # found again, by location
    assert pull_reviews(copy, connection, settings).counts["pending"] == 2  # its own project: nobody looked yet
    assert pull_reviews(original, connection, settings).counts["rejected"] == 2


FLOW_SCRIPT = """
import json, os, sys
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from flows.review import review_flow_fn
# the token comes from a Prefect Secret block here, not from the environment
Secret(value=os.environ.pop("TEST_LABEL_STUDIO_TOKEN")).save("label-studio-api-key", overwrite=True)
state = review_flow_fn()(sys.argv[1], {"poll_seconds": 1, "wait_hours": 0.1, "project": "flow"}, return_state=True)
with get_client(sync_client=True) as client:
    kinds = [s.type.value for s in client.read_flow_run_states(state.state_details.flow_run_id)]
print(json.dumps({"version": state.result(), "states": kinds}))
"""


def test_the_flow_pauses_until_people_finish(label_studio, client, tmp_path):
    server, base = label_studio
    dataset = detection_dataset(base / "flowing", [0.1, 0.2], masks=False)
    env = {k: v for k, v in os.environ.items() if k != "LABEL_STUDIO_API_KEY"} | {
        "PREFECT_HOME": str(tmp_path / "prefect"), "LABEL_STUDIO_URL": server.url,
        "TEST_LABEL_STUDIO_TOKEN": server.token, "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(base)}
    flow = subprocess.Popen([sys.executable, "-c", FLOW_SCRIPT, dataset.location], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).parents[1])
    annotated: list[float] = []  # when the person finished

    def reviewer() -> None:
        # a person opens the project some time after the flow pushed it, and labels both tasks
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and flow.poll() is None:
            projects = list(client.projects.list(title="flow"))
            tasks = existing_tasks(client, _connection(label_studio), projects[0].id) if projects else {}
            if len(tasks) == 2:
                time.sleep(3)
                for task in tasks.values():
                    annotate(client, task, task.predictions[0].result)
                annotated.append(time.monotonic())
                return
            time.sleep(1)

    person = threading.Thread(target=reviewer)
    person.start()
    try:
        # the flow waits up to 6 minutes (wait_hours 0.1) for people: done within 4, it was resumed because they were
        out, err = flow.communicate(timeout=240)
    finally:
        flow.kill()
        person.join()
    finished = time.monotonic()
    assert flow.returncode == 0, err[-3000:]
    assert len(annotated) == 1 and finished - annotated[0] < 120  # resumed by the watcher's polls, not the timeout
    result = json.loads(out.strip().splitlines()[-1])
    assert "PAUSED" in result["states"] and result["states"][-1] == "COMPLETED"
    reviewed = Dataset.open(dataset.location).samples(result["version"])
    assert [s.review.status for s in reviewed] == ["accepted", "accepted"]
    assert server.token not in out + err


def _processes_serving(data_dir: Path) -> list[int]:
    """The processes running Label Studio on `data_dir`: the server and whatever it forked, whatever their group."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"\0LABEL_STUDIO_BASE_DATA_DIR={data_dir}\0".encode() in b"\0" + environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or another user's
            continue
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes through /proc (Linux)")
def test_serve_in_the_background_stops_label_studio_on_sigterm_sigint_and_sighup(label_studio):
    """Runs last: it stops the module's server and serves the same data folder through the CLI, started as a
    team starts it, `edgedistill review serve ... &` (no terminal, SIGINT ignored); each stop signal ends it,
    and with it Label Studio and everything Label Studio started."""
    import httpx

    from labelers.label_studio_server import free_port

    server, base = label_studio
    server.stop()
    port = free_port()
    serve = shlex.join([sys.executable, "-m", "flows.cli", "review", "serve", "--data-dir", str(server.data_dir),
                        "--port", str(port), "--document-root", str(base)])
    probe = subprocess.run(["bash", "-c", "grep SigIgn /proc/self/status & wait"], capture_output=True, text=True)
    assert int(probe.stdout.split()[1], 16) & (1 << (signal.SIGINT - 1))  # what `&` does: SIGINT ignored
    for stop in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        log = base / f"serve-{stop.name}.log"
        started = subprocess.run(["bash", "-c", f"{serve} > {shlex.quote(str(log))} 2>&1 & echo $!"],
                                 capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
        pid = int(started.stdout)
        try:
            deadline = time.monotonic() + 240
            while "press Ctrl-C" not in log.read_text():
                assert _running(pid) and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
            output = log.read_text()
            assert f"LABEL_STUDIO_API_KEY={server.token}" in output and f"LABEL_STUDIO_URL=http://127.0.0.1:{port}" in output
            who = httpx.get(f"http://127.0.0.1:{port}/api/current-user/whoami",
                            headers={"Authorization": f"Token {server.token}"}, timeout=10)
            assert who.json()["email"] == server.username
            assert _processes_serving(server.data_dir)
            os.kill(pid, stop)
            deadline = time.monotonic() + 60
            while _running(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _running(pid) and "stopping Label Studio" in log.read_text(), (stop, log.read_text())
            assert _processes_serving(server.data_dir) == [], stop
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
        finally:
            for left in _processes_serving(server.data_dir) + ([pid] if _running(pid) else []):
                os.kill(left, signal.SIGKILL)  # a failed check must not leave a server behind
