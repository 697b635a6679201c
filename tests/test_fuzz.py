"""Bad input, fuzzed (issue 14): recipes, dataset descriptions and versions, bundle manifests, audio and image
files, and COCO, YOLO and Label Studio files, each made wrong in many ways by hypothesis from a valid one.
Every input gives a result or an EdgedistillError, never another exception, a hang or a half-written version.

`pytest tests/test_fuzz.py --hypothesis-show-statistics` prints how many inputs each property tried."""

from __future__ import annotations

import copy
import io
import json
import math
import os
import shutil
import signal
import struct
import tempfile
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgedistill.audio import audio_blocks, audio_duration, decode_audio, load_audio, wav_bytes
from edgedistill.bundle import BundleFile, InputSpec, Manifest, OutputSpec, load_bundle, write_manifest
from edgedistill.dataset import (AudioShape, Dataset, Label, LabelSource, OntologyClass, Provenance, Sample,
                                 sha256_bytes, sha256_file)
from edgedistill.errors import EdgedistillError
from edgedistill.formats.coco import read_coco
from edgedistill.formats.label_studio import coco_to_brush, read_label_studio
from edgedistill.formats.labelled import labelled_image
from edgedistill.formats.yolo import read_yolo
from edgedistill.images import decode_image, decode_rgba, load_image
from edgedistill.masks import encode_rle
from edgedistill.recipe import load_recipe
from edgedistill.streaming import StreamingSpec

RECIPES = Path(__file__).parent.parent / "recipes"
HANG_SECONDS = 20  # one input's parse or decode; the slowest seen (ffmpeg on a damaged file) took under 1 s

# A wall-clock deadline would flake on a busy machine; the hang guard below fails a hang instead.
# Sized for about a minute of one core in all: audio decoding falls back to ffmpeg, a process per try.
# derandomized: the same examples on every run, so that the suite passes or fails on the code alone (a new
# seed, to look further: HYPOTHESIS_RANDOM=1)
_RANDOM = bool(os.environ.get("HYPOTHESIS_RANDOM"))
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=not _RANDOM)
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=not _RANDOM)


class Hang(BaseException):
    """Raised by the hang guard; a BaseException, so that no `except Exception` in the code under test eats it."""


@contextmanager
def no_hang(seconds: float = HANG_SECONDS):
    """Fail the example if the block runs longer than `seconds` (a SIGALRM; an outer timer is put back)."""

    def hung(signum, frame):
        raise Hang(f"no answer within {seconds} s: a hang")

    started = time.monotonic()
    outer_handler = signal.signal(signal.SIGALRM, hung)
    outer_left, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_left:
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, outer_left - (time.monotonic() - started)))


def result_or_refusal(call, *args, **kwargs):
    """The call's result, or None when it refused the input with an EdgedistillError that says what is wrong.
    Any other exception propagates and fails the property."""
    with no_hang():
        try:
            result = call(*args, **kwargs)
        except EdgedistillError as error:
            assert error.problem.strip(), "an EdgedistillError must say what is wrong"
            event(f"{getattr(call, '__name__', 'call')}: refused")
            return None
    event(f"{getattr(call, '__name__', 'call')}: a result")
    return result


def fresh_folder(root: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=root))


# -- structured-but-wrong values -------------------------------------------------------------------
ODD_NUMBERS = [0, -1, 1, 2**31, 2**63, -(2**63), 10**30, 1e308, -1e308, 1e-320, math.nan, math.inf, -math.inf]
ODD_TEXT = ["", " ", "0", "true", "no", "null", "~", "\x00", "..", "../../etc/passwd", "/", "a\u2028b", "\U0001f600",
            "é" * 50, "_unknown_", "cuda:9", "s3://", "\r\n"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    st.sampled_from(ODD_NUMBERS), st.sampled_from(ODD_TEXT))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)


def _places(tree) -> list[tuple[object, object]]:
    """Every (container, key) of a JSON-like tree, outermost first."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    places = []
    for key, value in list(items):
        places.append((tree, key))
        places.extend(_places(value))
    return places


@st.composite
def mutated(draw, tree, max_mutations: int = 3):
    """A copy of a JSON-like tree with one to three changes: a value replaced by an odd one (wrong type, huge
    number, NaN, unicode...), pushed off by a factor, turned into text, or deleted, or an unknown key added."""
    tree = copy.deepcopy(tree)
    for _ in range(draw(st.integers(1, max_mutations))):
        places = _places(tree)
        if not places or draw(st.integers(0, 30)) == 0:
            return draw(VALUES)  # not a mapping at all
        container, key = draw(st.sampled_from(places))
        old = container[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add", "scale", "text"]))
        if action == "replace":
            container[key] = draw(VALUES)
        elif action == "delete":
            del container[key]
        elif action == "add":
            target = old if isinstance(old, (dict, list)) else container
            if isinstance(target, dict):
                target[draw(st.text(max_size=10))] = draw(VALUES)
            else:
                target.append(draw(VALUES))
        elif action == "scale" and isinstance(old, (int, float)) and not isinstance(old, bool):
            container[key] = old * draw(st.sampled_from([-1, 0, 1000, 10**12, 1e300]))
        elif action == "text":
            container[key] = str(old)
    return tree


@st.composite
def garbled(draw, data: bytes) -> bytes:
    """The bytes damaged one to three times: cut short, overwritten, padded, or a piece repeated or dropped;
    the header (the first 64 bytes) is hit more often than the rest."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, min(64, len(data))) | st.integers(0, len(data)))
        action = draw(st.sampled_from(["truncate", "overwrite", "overwrite", "insert", "repeat", "drop"]))
        if action == "truncate":
            del data[where:]
        elif action == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=8)
                         | st.sampled_from([b"\xff" * 4, b"\x00" * 4, b"\x7f\xff\xff\xff"]))
            data[where:where + len(patch)] = patch
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=32))
        elif action == "repeat":
            data[where:where] = data[where:where + draw(st.integers(1, 256))]
        else:
            del data[where:where + draw(st.integers(1, 256))]
    return bytes(data)


# -- recipes ---------------------------------------------------------------------------------------
def _full_recipes() -> list[dict]:
    """Every example recipe with every field written out (defaults included), so mutations reach them all."""
    return [load_recipe(path).model_dump(mode="json") for path in sorted(RECIPES.glob("*.yaml"))]


FULL_RECIPES = _full_recipes()


def _write_recipe(folder: Path, text: str | bytes) -> Path:
    path = fresh_folder(folder) / "recipe.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@FAST
@given(recipe=st.sampled_from(FULL_RECIPES).flatmap(mutated))
@example(recipe={**FULL_RECIPES[1], "frontend": {**FULL_RECIPES[1]["frontend"], "hop_length": 0}})
@example(recipe={**FULL_RECIPES[1], "detect": {**FULL_RECIPES[1]["detect"], "stride_seconds": math.inf}})
def test_a_mutated_recipe_loads_or_is_refused(recipe, tmp_path_factory):
    path = _write_recipe(tmp_path_factory.getbasetemp(), yaml.safe_dump(recipe, allow_unicode=True, sort_keys=False))
    result_or_refusal(load_recipe, path)


YAML_FRAGMENTS = ["task: keyword_spotting\n", "name: x\n", "keywords: [a, b]\n", "- a\n", "[", "{", "&a [*a]\n",
                  "!!python/object:os.system {}\n", "? [a]\n: b\n", "%YAML 1.1\n---\n", "---\n", "...\n", "\t", "'",
                  "task: detection\nclasses: {a: [b]}\n", "*unknown\n", "<<: *a\n", "!!binary xyz\n", "a: !!float x\n",
                  "a: !!int 0x\n", "a: !!bool x\n", "a: !!timestamp 2020-99-99\n", "a: !!timestamp 99999-01-01\n"]


@FAST
@given(text=st.lists(st.sampled_from(YAML_FRAGMENTS) | st.text(max_size=20), max_size=6).map("".join)
       | st.binary(max_size=200))
@example(text=b"task: keyword_spotting\nname: \xff\n")  # not UTF-8
@example(text="[" * 5000)  # nested deeper than the parser recurses
@example(text="task: keyword_spotting\nseed: " + "9" * 5000)  # more digits than Python turns into an int
@example(text="")
def test_any_text_as_a_recipe_loads_or_is_refused(text, tmp_path_factory):
    result_or_refusal(load_recipe, _write_recipe(tmp_path_factory.getbasetemp(), text))


def test_a_folder_as_a_recipe_is_refused(tmp_path):
    (tmp_path / "recipe.yaml").mkdir()
    with pytest.raises(EdgedistillError, match="recipe.yaml"):
        load_recipe(tmp_path / "recipe.yaml")


# -- datasets: dataset.json and versions/<id>.jsonl -------------------------------------------------
def _tone_sample(dataset: Dataset, index: int) -> Sample:
    audio = np.sin(np.arange(1600) * (0.05 + 0.01 * index)).astype(np.float32) * 0.3
    digest, media = dataset.add_media(wav_bytes(audio, 16000), "wav")
    return Sample(id=digest[:16], media=media, kind="audio", shape=AudioShape(duration=0.1, sample_rate=16000),
                  split="train", provenance=Provenance(source="test", params={"index": index}, seed=index, group="g"),
                  labels=[Label(class_name="yes", span=(0.0, 0.1), transcript="yes", score=0.9,
                                source=LabelSource(labeler="test", model="m", version="1"))])


@pytest.fixture(scope="module")
def dataset_folder(tmp_path_factory) -> Path:
    """A small keyword dataset with two versions (the second one's parent is the first) and a report."""
    folder = tmp_path_factory.mktemp("dataset")
    dataset = Dataset.create(folder, "words", "keyword_spotting", [OntologyClass(name="yes", prompts=["yes"])])
    first = dataset.commit([_tone_sample(dataset, i) for i in range(3)], None, "generate", {"n": 3})
    dataset.commit([_tone_sample(dataset, i) for i in range(4)], first.id, "augment", {"copies": 1},
                   report={"lost": 0})
    return folder


def _description(source: Path) -> dict:
    """The dataset's description with its history in it, as datasets before history/ kept it (and still may):
    the tests write it whole, mutated or not, as dataset.json, and copy no history/ folder."""
    description = json.loads((source / "dataset.json").read_text())
    records = [json.loads(path.read_text()) for path in (source / "history").iterdir()]
    return description | {"versions": sorted(records, key=lambda record: record["created"])}


def _copy_dataset(source: Path, root: Path) -> Path:
    folder = fresh_folder(root)
    for part in ("versions", "reports", "media"):
        shutil.copytree(source / part, folder / part)
    return folder


def _read_everything(location: Path) -> None:
    """What every stage does with a dataset: open it, and read each version, its ancestry and its report."""
    dataset = Dataset.open(location)
    for version in dataset.info.versions:
        dataset.samples(version.id)
        list(dataset.lineage(version))
        dataset.report(version)
    if dataset.info.versions:
        dataset.version(dataset.info.versions[0].id[:4])


@FAST
@given(data=st.data())
def test_a_mutated_dataset_description_opens_or_is_refused(data, dataset_folder, tmp_path_factory):
    description = _description(dataset_folder)
    folder = _copy_dataset(dataset_folder, tmp_path_factory.getbasetemp())
    if data.draw(st.booleans(), label="as bytes"):
        text = data.draw(garbled(json.dumps(description).encode()), label="dataset.json")
    else:
        text = json.dumps(data.draw(mutated(description), label="dataset.json"), allow_nan=True).encode()
    (folder / "dataset.json").write_bytes(text)
    result_or_refusal(_read_everything, folder)


def test_a_loop_of_parents_is_refused_not_walked_forever(dataset_folder, tmp_path):
    description = _description(dataset_folder)
    first, second = description["versions"]
    first["parent"] = second["id"]  # each version is the other's parent
    folder = _copy_dataset(dataset_folder, tmp_path)
    (folder / "dataset.json").write_text(json.dumps(description))
    dataset = Dataset.open(folder)
    with no_hang(5), pytest.raises(EdgedistillError, match="is not another version"):
        list(dataset.lineage(dataset.version()))


def test_a_stage_that_changed_nothing_has_its_parent_in_its_lineage_once(dataset_folder, tmp_path):
    """Its version has its parent's id (the same content): the walk must not take it for its own parent."""
    folder = _copy_dataset(dataset_folder, tmp_path)
    (folder / "dataset.json").write_text(json.dumps(_description(dataset_folder)))
    dataset = Dataset.open(folder)
    head = dataset.head
    same = dataset.commit(dataset.samples(head.id), head.id, "verify", {"changed": "nothing"})
    assert same.id == head.id
    with no_hang(5):
        assert [v.stage for v in dataset.lineage(same)] == ["verify", "augment", "generate"]


@FAST
@given(data=st.data())
@example(data=None)  # stands for a line that is not UTF-8; see below
def test_a_mutated_version_file_reads_or_is_refused(data, dataset_folder, tmp_path_factory):
    description = _description(dataset_folder)
    old_id = description["versions"][-1]["id"]
    lines = (dataset_folder / "versions" / f"{old_id}.jsonl").read_bytes().splitlines()
    if data is None:
        body = b"\n".join([lines[0], b'{"id": "\xff\xfe"}', *lines[1:]]) + b"\n"
    elif data.draw(st.booleans(), label="as bytes"):
        body = data.draw(garbled(b"\n".join(lines) + b"\n"), label="version file")
    else:
        index = data.draw(st.integers(0, len(lines) - 1), label="line")
        sample = data.draw(mutated(json.loads(lines[index])), label="sample")
        lines[index] = json.dumps(sample, allow_nan=True).encode()
        body = b"\n".join(lines) + b"\n"
    # the version's id is its file's hash: give the damaged file its own id, so that the reader parses it
    keep_id = data is not None and data.draw(st.integers(0, 9), label="keep the old id") == 0
    new_id = old_id if keep_id else sha256_bytes(body)[:16]
    folder = _copy_dataset(dataset_folder, tmp_path_factory.getbasetemp())
    (folder / "versions" / f"{new_id}.jsonl").write_bytes(body)
    (folder / "dataset.json").write_text(json.dumps(description).replace(old_id, new_id))
    result_or_refusal(_read_everything, folder)


# -- the version writer ------------------------------------------------------------------------------
TEXT = st.text(max_size=12) | st.sampled_from(ODD_TEXT)
FLOATS = st.floats() | st.sampled_from(ODD_NUMBERS)


@st.composite
def samples(draw) -> list[Sample]:
    """Samples as a stage might make them, with any text and numbers pydantic lets in; ids may repeat."""
    made = []
    for _ in range(draw(st.integers(0, 4))):
        label = dict(class_name=draw(TEXT), transcript=draw(st.none() | TEXT), score=draw(st.none() | FLOATS),
                     box=draw(st.none() | st.tuples(FLOATS, FLOATS, FLOATS, FLOATS)),
                     span=draw(st.none() | st.tuples(FLOATS, FLOATS)), source=LabelSource(labeler=draw(TEXT)))
        shape = draw(st.fixed_dictionaries({"duration": FLOATS, "sample_rate": st.integers()})
                     | st.fixed_dictionaries({"width": st.integers(), "height": st.integers()}))
        try:  # what pydantic refuses never reaches a version
            made.append(Sample(id=draw(st.sampled_from(["a", "b", "c"]) | TEXT), media=draw(TEXT), kind="audio",
                               shape=shape, provenance=Provenance(source=draw(TEXT), params=draw(PARAMS)),
                               labels=[Label(**label)]))
        except ValueError:
            pass
    return made


PARAMS = st.dictionaries(TEXT, VALUES, max_size=3) | st.sampled_from([
    {1: "a key that is not text"}, {"a": {1, 2}}, {"a": object()}, {"a": b"\xff"}, {"a": np.float32(1.5)},
    {"a": math.nan}, {"a": Path("/tmp")}, {(1, 2): "tuple key"}])
REPORTS = st.none() | st.dictionaries(TEXT, VALUES, max_size=3) | st.sampled_from([{"a": object()}, {(1,): 2}])


@FAST
@given(made=samples(), params=PARAMS, report=REPORTS, stage=st.sampled_from(["generate", "split"]) | TEXT)
def test_a_commit_writes_a_version_that_reads_back_or_writes_nothing(made, params, report, stage, dataset_folder,
                                                                     tmp_path_factory):
    folder = _copy_dataset(dataset_folder, tmp_path_factory.getbasetemp())
    (folder / "dataset.json").write_text(json.dumps(_description(dataset_folder)))
    dataset = Dataset.open(folder)
    history, files = list(dataset.info.versions), sorted((folder / "versions").iterdir())
    head = dataset.head.id
    version = result_or_refusal(dataset.commit, made, head, stage, params, report)
    reopened = Dataset.open(folder)
    if version is None:  # refused: nothing of it is visible, in this object or on disk
        assert dataset.info.versions == history
        assert [v.id for v in reopened.info.versions] == [v.id for v in history]
        assert sorted((folder / "versions").iterdir()) == files and not (folder / "history").exists()
        return
    assert reopened.info.versions[-1].id == version.id
    written = [s.model_dump_json() for s in made]
    assert [s.model_dump_json() for s in reopened.samples(version.id)] == written, "a version reads back as written"


# -- bundles -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bundle")
    (folder / "model.tflite").write_bytes(b"TFL3" + bytes(range(256)))
    manifest = Manifest(
        name="words", task="keyword_spotting", labels=["yes", "_unknown_", "_silence_"],
        input=InputSpec(kind="audio", shape=[1, 49, 10, 1], frontend={"sample_rate": 16000, "hop_length": 320}),
        output=OutputSpec(shape=[1, 3]),
        streaming=StreamingSpec(stride_frames=5, stride_seconds=0.1, smoothing_windows=3, refractory_seconds=1.0,
                                thresholds={"yes": 0.8}),
        files=[BundleFile(path="model.tflite", sha256=sha256_file(folder / "model.tflite"), bytes=260,
                          role="model_int8")],
        metrics={"int8": {"accuracy": 0.9}}, created="2026-01-01T00:00:00Z", edgedistill_version="0.1.0")
    write_manifest(folder, manifest)
    return folder


@FAST
@given(data=st.data())
def test_a_mutated_bundle_manifest_loads_or_is_refused(data, bundle_folder, tmp_path_factory):
    manifest = json.loads((bundle_folder / "manifest.json").read_text())
    folder = fresh_folder(tmp_path_factory.getbasetemp())
    shutil.copy(bundle_folder / "model.tflite", folder / "model.tflite")
    if data.draw(st.booleans(), label="as bytes"):
        text = data.draw(garbled(json.dumps(manifest).encode()), label="manifest.json")
    else:
        text = json.dumps(data.draw(mutated(manifest), label="manifest.json"), allow_nan=True).encode()
    (folder / "manifest.json").write_bytes(text)
    result_or_refusal(load_bundle, folder)


# -- audio -------------------------------------------------------------------------------------------
def _audio_file(fmt: str, subtype: str | None = None) -> bytes:
    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(rate // 4) / rate)
    buffer = io.BytesIO()
    soundfile.write(buffer, tone, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _image_file(fmt: str, **options) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


AUDIO = {".wav": _audio_file("WAV", "PCM_16"), ".flac": _audio_file("FLAC"), ".mp3": _audio_file("MP3"),
         ".ogg": _audio_file("OGG", "VORBIS")}
EXIF_ROTATED = Image.Exif()
EXIF_ROTATED[0x0112] = 6
IMAGES = {".png": _image_file("PNG"), ".jpg": _image_file("JPEG", exif=EXIF_ROTATED), ".gif": _image_file("GIF"),
          ".bmp": _image_file("BMP"), ".webp": _image_file("WEBP"), ".tif": _image_file("TIFF")}
SUFFIXES = [*AUDIO, *IMAGES, ".txt", ""]


def _decode_audio_file(folder: Path, data: bytes, suffix: str) -> None:
    """Every way a stage reads audio: a file whole (`decode_audio` of its bytes), its duration, and its blocks."""
    path = fresh_folder(folder) / f"clip{suffix}"
    path.write_bytes(data)
    result_or_refusal(load_audio, path, 16000)
    result_or_refusal(audio_duration, path)
    result_or_refusal(_all_blocks, path)


def _all_blocks(path: Path) -> int:
    return sum(block.size for block in audio_blocks(path, 16000, block_seconds=0.05))


@SLOW
@given(data=st.data(), original=st.sampled_from(sorted(AUDIO)), suffix=st.sampled_from(SUFFIXES))
@example(data=None, original=".wav", suffix=".wav")  # zero-length
@example(data=None, original=".png", suffix=".wav")  # an image named .wav
def test_a_damaged_audio_file_decodes_or_is_refused(data, original, suffix, tmp_path_factory):
    if data is None:
        damaged = b"" if original == ".wav" else IMAGES[original]
    else:
        damaged = data.draw(garbled(AUDIO[original]), label="file")
    _decode_audio_file(tmp_path_factory.getbasetemp(), damaged, suffix)


def _wav(format_tag: int, channels: int, rate: int, bits: int, declared: int, payload: bytes) -> bytes:
    block_align = channels * bits // 8 & 0xFFFF
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * block_align & 0xFFFFFFFF, block_align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", declared) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


@SLOW
@given(format_tag=st.sampled_from([1, 3, 6, 7, 0xFFFE]) | st.integers(0, 0xFFFF),
       channels=st.sampled_from([0, 1, 2, 255, 0xFFFF]) | st.integers(0, 0xFFFF),
       rate=st.sampled_from([0, 1, 8000, 16000, 48000, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1),
       bits=st.sampled_from([0, 8, 16, 24, 32, 64]) | st.integers(0, 0xFFFF),
       declared=st.sampled_from([0, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1),
       payload=st.binary(max_size=4000) | st.just(AUDIO[".wav"][44:]))
@example(format_tag=1, channels=1, rate=16000, bits=16, declared=2**32 - 1, payload=AUDIO[".wav"][44:])  # "4 GB"
@example(format_tag=1, channels=1, rate=1, bits=16, declared=8000, payload=AUDIO[".wav"][44:])
def test_a_wav_header_with_any_fields_decodes_or_is_refused(format_tag, channels, rate, bits, declared, payload,
                                                            tmp_path_factory):
    _decode_audio_file(tmp_path_factory.getbasetemp(), _wav(format_tag, channels, rate, bits, declared, payload),
                       ".wav")


# -- images ------------------------------------------------------------------------------------------
def _decode_image_file(folder: Path, data: bytes, suffix: str) -> None:
    """Every way an image is read: a file to RGB (`decode_image` of its bytes) and bytes to RGBA, and a file's
    upright size (the importers)."""
    result_or_refusal(decode_rgba, data, name=f"photo{suffix}")
    path = fresh_folder(folder) / f"photo{suffix}"
    path.write_bytes(data)
    result_or_refusal(load_image, path)
    result_or_refusal(labelled_image, path, "a label file")


@FAST
@given(data=st.data(), original=st.sampled_from(sorted(IMAGES)), suffix=st.sampled_from(SUFFIXES))
@example(data=None, original=".png", suffix=".png")  # zero-length
@example(data=None, original=".wav", suffix=".png")  # audio named .png
def test_a_damaged_image_file_decodes_or_is_refused(data, original, suffix, tmp_path_factory):
    if data is None:
        damaged = b"" if original == ".png" else AUDIO[original]
    else:
        damaged = data.draw(garbled(IMAGES[original]), label="file")
    _decode_image_file(tmp_path_factory.getbasetemp(), damaged, suffix)


@FAST
@given(data=st.data())
def test_a_damaged_exif_block_decodes_or_is_refused(data, tmp_path_factory):
    """The JPEG's EXIF (which sets the rotation) damaged, the pixels intact."""
    jpeg = IMAGES[".jpg"]
    start = jpeg.index(b"Exif\x00\x00")
    length = struct.unpack(">H", jpeg[start - 2:start])[0]
    exif = data.draw(garbled(jpeg[start + 6:start + length - 2]), label="exif")
    exif = exif[:length - 8].ljust(length - 8, b"\x00")  # the segment keeps its length: only its content is wrong
    _decode_image_file(tmp_path_factory.getbasetemp(), jpeg[:start + 6] + exif + jpeg[start + length - 2:], ".jpg")


def _chunk(kind: bytes, content: bytes) -> bytes:
    return struct.pack(">I", len(content)) + kind + content + struct.pack(">I", zlib.crc32(kind + content))


PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type


@FAST
@given(width=st.integers(1, 64) | st.sampled_from([0, 100_000, 2**31 - 1]) | st.integers(0, 2**31 - 1),
       height=st.integers(1, 64) | st.sampled_from([0, 100_000, 2**31 - 1]) | st.integers(0, 2**31 - 1),
       depth=st.sampled_from([1, 2, 4, 8, 16]) | st.integers(0, 255),
       colour=st.sampled_from(sorted(PNG_CHANNELS)) | st.integers(0, 255),
       interlace=st.sampled_from([0, 1]) | st.integers(0, 255),
       pixels=st.sampled_from(["as many as the header says"]) | st.binary(max_size=300).map(zlib.compress)
       | st.binary(max_size=300))
@example(width=100_000, height=100_000, depth=8, colour=2, interlace=0, pixels=zlib.compress(b"\x00" * 300))
def test_a_png_header_with_any_fields_decodes_or_is_refused(width, height, depth, colour, interlace, pixels,
                                                            tmp_path_factory):
    if isinstance(pixels, str):  # rows of zeros, each with its filter byte, up to a megabyte
        row = 1 + math.ceil(width * PNG_CHANNELS.get(colour, 1) * depth / 8)
        pixels = zlib.compress(b"\x00" * min(row * height, 1 << 20))
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")
    _decode_image_file(tmp_path_factory.getbasetemp(), png, ".png")


# -- label files: COCO, YOLO, Label Studio -------------------------------------------------------------
def _photos(folder: Path) -> None:
    (folder / "images").mkdir()
    (folder / "images" / "a.png").write_bytes(IMAGES[".png"])  # 16 x 12
    (folder / "images" / "b.jpg").write_bytes(IMAGES[".jpg"])  # 16 x 12, upright 12 x 16


def _mask(width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[2:6, 3:9] = True
    return mask


COCO = {"images": [{"id": 1, "file_name": "a.png", "width": 16, "height": 12},
                   {"id": 2, "file_name": "images/b.jpg", "width": 12, "height": 16}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 5, 4], "iscrowd": 0,
                         "segmentation": [[1, 2, 6, 2, 6, 6, 1, 6]]},
                        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 12, 16], "iscrowd": 1},
                        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [3, 2, 6, 4],
                         "segmentation": {**encode_rle(_mask(16, 12)), "size": [12, 16]}}]}


@FAST
@given(data=st.data())
def test_a_mutated_coco_file_reads_or_is_refused(data, tmp_path_factory):
    folder = fresh_folder(tmp_path_factory.getbasetemp())
    _photos(folder)
    if data.draw(st.booleans(), label="as bytes"):
        text = data.draw(garbled(json.dumps(COCO).encode()), label="annotations.json")
    else:
        text = json.dumps(data.draw(mutated(COCO), label="annotations.json"), allow_nan=True).encode()
    (folder / "annotations.json").write_bytes(text)
    result_or_refusal(read_coco, folder / "annotations.json")


@pytest.mark.parametrize("polygons", [[[]], [[1, 2, 6, 2]], [[1, 2, 6]]])
def test_a_coco_polygon_of_fewer_than_three_points_leaves_the_box_without_a_mask(polygons, tmp_path):
    _photos(tmp_path)
    coco = copy.deepcopy(COCO)
    coco["annotations"][0]["segmentation"] = polygons
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    first = read_coco(tmp_path / "annotations.json").images[0].labels[0]
    assert first.box == (1.0, 2.0, 5.0, 4.0) and first.mask is None


BOX_TOKENS = ["0", "1", "-1", "0.5", "nan", "inf", "-inf", "1e999", "9" * 40, "0x10", "", "a", "½", "\x00", "1,5"]


@FAST
@given(lines=st.lists(st.lists(st.sampled_from(BOX_TOKENS) | st.text(max_size=4), max_size=6).map(" ".join)
                      | st.sampled_from(["0 0.5 0.5 0.5 0.5", "1 0.25 0.5 0.3 0.2"]), max_size=4).map("\n".join)
       | st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
       names=st.sampled_from(["names: [cat, dog]\n", "names: {0: cat, 1: dog}\n"]) | st.sampled_from(YAML_FRAGMENTS)
       | st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
       encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]))
@example(lines="0 0.5 0.5 0.5 0.5", names="names: {0: cat, b: dog}\n", encoding="utf-8")
@example(lines="0 0.5 0.5 0.5 0.5", names="- cat\n- dog\n", encoding="utf-8")
@example(lines="0 0.5 0.5 0.5 0.5", names="names: [cat\n", encoding="utf-8")
def test_a_mutated_yolo_folder_reads_or_is_refused(lines, names, encoding, tmp_path_factory):
    folder = fresh_folder(tmp_path_factory.getbasetemp())
    _photos(folder)
    (folder / "labels").mkdir()
    (folder / "labels" / "a.txt").write_bytes(lines.encode(encoding, errors="replace"))
    (folder / "data.yaml").write_bytes(names.encode(encoding, errors="replace"))
    result_or_refusal(read_yolo, folder)


def _region(kind: str, value: dict) -> dict:
    return {"from_name": kind, "to_name": "image", "type": kind, "original_width": 16, "original_height": 12,
            "value": value}


LABEL_STUDIO = [
    {"id": 1, "data": {"image": "/data/local-files/?d=photos/a.png"},
     "annotations": [{"id": 7, "was_cancelled": False, "updated_at": "2026-01-01T00:00:00Z", "result": [
         _region("rectanglelabels", {"x": 18.75, "y": 100 / 6, "width": 37.5, "height": 100 / 3,
                                     "rectanglelabels": ["cat"]}),  # the brush mask's box: one object
         _region("brushlabels", {"format": "rle", "rle": coco_to_brush(encode_rle(_mask(16, 12))),
                                 "brushlabels": ["cat"]})]}]},
    {"id": 2, "data": {"image": "images/b.jpg"}, "annotations": [
        {"id": 8, "was_cancelled": True, "result": []},
        {"id": 9, "result": [_region("rectanglelabels", {"x": 0, "y": 0, "width": 50, "height": 50,
                                                         "rectanglelabels": ["dog"]})]}]},
    {"id": 3, "data": {"image": "images/a.png"}, "annotations": []}]


@FAST
@given(data=st.data())
def test_a_mutated_label_studio_export_reads_or_is_refused(data, tmp_path_factory):
    folder = fresh_folder(tmp_path_factory.getbasetemp())
    _photos(folder)
    if data.draw(st.booleans(), label="as bytes"):
        text = data.draw(garbled(json.dumps(LABEL_STUDIO).encode()), label="export.json")
    else:
        text = json.dumps(data.draw(mutated(LABEL_STUDIO), label="export.json"), allow_nan=True).encode()
    (folder / "export.json").write_bytes(text)
    result_or_refusal(read_label_studio, folder / "export.json")


@pytest.mark.parametrize("reference", ["http://[a.png", "http://[::1/gone.png", "?d=\x00"])
def test_an_image_reference_that_is_no_url_is_looked_for_as_a_path(reference, tmp_path):
    _photos(tmp_path)
    (tmp_path / "export.json").write_text(json.dumps([{**LABEL_STUDIO[0], "data": {"image": reference}}]))
    with pytest.raises(EdgedistillError, match="which does not exist"):
        read_label_studio(tmp_path / "export.json")


def test_the_valid_inputs_the_fuzzing_starts_from_are_accepted(dataset_folder, bundle_folder, tmp_path):
    """The mutations start from valid files: were these refused, the properties above would test nothing."""
    assert len(FULL_RECIPES) == len(list(RECIPES.glob("*.yaml"))) >= 2
    _read_everything(dataset_folder)
    assert load_bundle(bundle_folder).name == "words"
    for suffix, data in AUDIO.items():
        assert decode_audio(data, 16000, name=f"clip{suffix}").size > 3000, suffix
    for suffix, data in IMAGES.items():
        assert decode_image(data, name=f"photo{suffix}").shape == ((16, 12, 3) if suffix == ".jpg" else (12, 16, 3))
    _photos(tmp_path)
    (tmp_path / "annotations.json").write_text(json.dumps(COCO))
    coco = read_coco(tmp_path / "annotations.json")
    assert [len(i.labels) for i in coco.images] == [2, 0] and len(coco.images[1].ignore) == 1
    (tmp_path / "export.json").write_text(json.dumps(LABEL_STUDIO))
    assert [len(i.labels) for i in read_label_studio(tmp_path / "export.json").images] == [1, 1]
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n1 0.25 0.5 0.3 0.2")
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    assert [len(i.labels) for i in read_yolo(tmp_path).images] == [2, 0]
