"""Real edgedistill processes that run at once on one dataset, or are killed mid-run."""

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgedistill.dataset import Dataset
from edgedistill.errors import EdgedistillError
from edgedistill.shards import run_shards
from dying_shards import shard_that_dies_on_4_and_7, shard_that_squares
from tiny_recipes import tiny_recipe

ROOT = Path(__file__).resolve().parents[1]


def _edgedistill(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})


def _coco_folder(folder: Path, images: int, seed: int) -> Path:
    """A COCO file of `images` distinct photos with a box each."""
    rng = np.random.default_rng(seed)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cat"}]}
    for index in range(images):
        (folder / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)).save(folder / "images" / f"{index}.png")
        coco["images"].append({"id": index, "file_name": f"{index}.png", "width": 64, "height": 48})
        coco["annotations"].append({"id": index, "image_id": index, "category_id": 1, "bbox": [4, 4, 20, 16]})
    (folder / "instances.json").write_text(json.dumps(coco))
    return folder / "instances.json"


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_two_processes_importing_into_one_dataset_both_keep_their_version(tmp_path, where, request):
    location = request.getfixturevalue("bucket") + "/pets" if where == "bucket" else str(tmp_path / "pets")
    files = [_coco_folder(tmp_path / name, 80, seed) for seed, name in enumerate(("first", "second"))]
    running = [_edgedistill("import", "coco", str(file), location, cwd=tmp_path) for file in files]
    for process in running:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]

    dataset = Dataset.open(location)
    imports = [v for v in dataset.info.versions if v.stage == "import"]
    assert len(imports) == 2  # neither writer undid the other's entry in the history
    samples = [{s.id for s in dataset.samples(version.id)} for version in imports]  # each version whole
    assert [len(ids) for ids in samples] == [80, 80] and not samples[0] & samples[1]


def test_a_second_process_on_the_same_stage_is_told_who_runs_it_and_the_work_is_done_once(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("task: keyword_spotting\nname: tiny\nkeywords: [yes]\nspeech:\n  engines: [espeak-ng]\n"
                      "  voices_per_engine: 6\n  variants_per_voice: 3\n")
    out = tmp_path / "run"
    first = _edgedistill("generate", str(recipe), "--out", str(out), cwd=tmp_path)
    work = out / "dataset" / "work"
    while first.poll() is None and not list(work.glob("*.lock")):  # the first holds the stage
        time.sleep(0.05)
    second = _edgedistill("generate", str(recipe), "--out", str(out), cwd=tmp_path)
    _, refused = second.communicate(timeout=600)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-2000:]
    assert second.returncode == 2
    assert f"stage synthesize of {out / 'dataset'} is being run by another edgedistill process: pid {first.pid}" \
        in " ".join(refused.split())

    again = _edgedistill("generate", str(recipe), "--out", str(out), cwd=tmp_path)  # finds the version
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-2000:]
    assert [v.stage for v in Dataset.open(out / "dataset").info.versions] == ["synthesize"]
    assert not list(work.glob("*")), "the work folder and its lock are cleaned up"


@pytest.mark.slow
def test_two_machines_running_the_same_stage_on_one_bucket_both_end_with_its_one_version(tmp_path, bucket):
    """Two machines share a bucket but not a cache, so neither sees the other's lock on the stage: both do the
    work, and both must end with the one version it makes, recorded once, whole and readable."""
    location = f"{bucket}/tiny"
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"task: keyword_spotting\nname: tiny\ndataset: {location}\nkeywords: [yes]\nspeech:\n"
                      "  engines: [espeak-ng]\n  voices_per_engine: 6\n  variants_per_voice: 3\n")
    machines = [tmp_path / name for name in ("first", "second")]
    running = [subprocess.Popen([sys.executable, "-m", "flows.cli", "generate", str(recipe), "--out", str(machine)],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=os.environ | {"PYTHONPATH": str(ROOT), "EDGEDISTILL_CACHE": str(machine / "cache")})
               for machine in machines]
    both_at_work = False  # each holds the stage's lock on its own machine at the same time
    while any(process.poll() is None for process in running) and not both_at_work:
        both_at_work = all(list((machine / "cache").glob("work/*/*.lock")) for machine in machines)
        time.sleep(0.05)
    said = []
    for process in running:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
        said.append(" ".join((stdout + stderr).split()))  # the CLI prints its tables to stderr
    assert both_at_work, "one machine finished before the other started the stage: nothing ran at once"

    dataset = Dataset.open(location)
    assert [v.stage for v in dataset.info.versions] == ["synthesize"]
    store = dataset.store
    assert len(store.names("history")) == 1 and store.names("versions") == [f"{dataset.head.id}.jsonl"]
    assert all(f"version {dataset.head.id} (synthesize)" in words for words in said), said
    samples = dataset.samples(dataset.head.id)
    assert len(samples) == dataset.head.counts["samples"] > 0
    assert all(len(dataset.media_file(s.media).read_bytes()) > 44 for s in samples)  # every clip is there
    assert dataset.report(dataset.head)["engine_counts"]


def _labelled(score: float) -> list:
    from edgedistill.dataset import ImageShape, Label, LabelSource, Provenance, Sample

    return [Sample(id="photo", media="media/ab/photo.png", kind="image", shape=ImageShape(width=64, height=48),
                   provenance=Provenance(source="test"),
                   labels=[Label(class_name="cat", box=(4, 4, 20, 16), score=score, source=LabelSource(labeler="t"))])]


def test_a_machine_that_finishes_a_stage_second_goes_on_from_the_version_of_the_first(tmp_path, bucket, monkeypatch):
    """Two machines can make different bytes for the same work (labels from two GPUs differ in their last digits).
    The history keeps the version of the one that finished first, and the other goes on from that version, not
    from its own: otherwise its next stage would name a parent the history does not hold."""
    from edgedistill.dataset import OntologyClass

    location = f"{bucket}/pets"
    Dataset.create(location, "pets", "detection", [OntologyClass(name="cat", prompts=["cat"])])
    slow, quick = Dataset.open(location), Dataset.open(location)

    def label_slowly(_, work):  # while this machine labels, the other one (its own cache) labels and finishes
        monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "quick-machine"))
        quick.derive(None, "label", {"model": "owl"}, lambda *_: _labelled(0.91))
        return _labelled(0.92)

    labelled = slow.derive(None, "label", {"model": "owl"}, label_slowly)
    quick_version = quick.find_version(None, "label", {"model": "owl"})
    assert labelled.id == quick_version.id
    assert [label.score for s in slow.samples(labelled.id) for label in s.labels] == [0.91]
    split = slow.derive(labelled, "split", {"seed": 0},
                        lambda samples, _: [s.model_copy(update={"split": "train"}) for s in samples])
    dataset = Dataset.open(location)
    assert [v.stage for v in dataset.lineage(dataset.version(split.id))] == ["split", "label"]


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_of_two_writers_of_a_history_record_exactly_one_writes_it(tmp_path, where, request):
    """What keeps the history whole when two machines finish the same work in the same moment."""
    from edgedistill.dataset import Store

    store = Store(request.getfixturevalue("bucket") if where == "bucket" else tmp_path)
    assert store.write("history/k.json", b"first", exclusive=True)
    assert not store.write("history/k.json", b"second", exclusive=True)
    assert store.read("history/k.json") == b"first" and store.names("history") == ["k.json"]


# enough clips for four synthesis shards, so that finished shards lie on disk while others still run
TINY_RECIPE = tiny_recipe(speech={"variants_per_voice": 10})


class Watcher(threading.Thread):
    """Looks at a run folder all the time a run goes on, as another program reading it would: every version
    file it can see is whole, every history record names a version that is there, a bundle folder is whole,
    and no finished shard is ever written a second time (a rewrite is a new file, a new inode)."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.out, self.stopped, self.problems = out, threading.Event(), []
        self.shards: dict[Path, int] = {}

    def run(self) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(FileNotFoundError):  # a work folder removed while we looked
                self.look()
            time.sleep(0.02)

    def look(self) -> None:
        dataset = self.out / "dataset"
        for version in dataset.glob("versions/*.jsonl"):
            if hashlib.sha256(version.read_bytes()).hexdigest()[:16] != version.stem:
                self.problems.append(f"half-written version {version.name}")
        for record in dataset.glob("history/*.json"):
            version_id = json.loads(record.read_text())["id"]
            if not (dataset / "versions" / f"{version_id}.jsonl").exists():
                self.problems.append(f"{record.name} names a version that is not there")
        for bundle in [self.out / "bundle", *self.out.glob("bundles/[!.]*")]:  # not the ones being built
            if bundle.exists() and not (bundle / "manifest.json").exists():
                self.problems.append(f"a bundle folder without its manifest: {bundle}")
        for shard in dataset.glob("work/**/shard-*.jsonl"):
            inode = shard.stat().st_ino
            if self.shards.setdefault(shard, inode) != inode:
                self.problems.append(f"finished shard {shard.name} was made again")


def _stage_running(out: Path, stage: str) -> bool:
    """`stage` is under way: the stages before it have their versions, and a stage holds its lock."""
    history = [json.loads(p.read_text())["stage"] for p in (out / "dataset").glob("history/*.json")]
    before = {"whisper_check": ["synthesize"]}.get(stage, [])
    return all(s in history for s in before) and stage not in history and \
        any((out / "dataset").glob("work/*.lock"))


KILLS = [  # (where, when it is there, the signal: as a crash, a `kill`, Ctrl-C at the terminal)
    ("synthesis, a shard finished", lambda out: any((out / "dataset").glob("work/*/shard-*.jsonl")), signal.SIGKILL),
    ("labelling (Whisper check)", lambda out: _stage_running(out, "whisper_check"), signal.SIGTERM),
    ("training, an epoch saved", lambda out: any(out.glob("model/checkpoints/*/checkpoint.pt")), signal.SIGKILL),
    ("export, the bundle being built", lambda out: any(out.glob("bundles/.*.building-*")), signal.SIGINT),
]


def _run(recipe: Path, out: Path, home: Path, stop_when=None, stop_with=signal.SIGKILL) -> tuple[int, bool]:
    """`edgedistill run`, sent `stop_with` (its whole process group, as a terminal or a supervisor does) once
    `stop_when(out)` holds; returns its exit code and whether it was stopped, once no process of it is left.
    A SIGTERM or Ctrl-C ends it with the exit code and the words of a stop."""
    terminal = open(out.parent / f"{out.name}-terminal.txt", "w+")
    # as if typed at a terminal: Ctrl-C not ignored, even when the tests run as a background job (which ignores it)
    run = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(recipe), "--out", str(out)],
                           cwd=recipe.parent, start_new_session=True, stdout=terminal, stderr=terminal,
                           env=os.environ | {"PREFECT_HOME": str(home)},
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stopped = False
    while run.poll() is None:
        if stop_when is not None and not stopped and stop_when(out):
            os.killpg(run.pid, stop_with)
            stopped = True
        time.sleep(0.02)
    for _ in range(300):  # the workers and the Prefect server go too: nothing is left running
        try:
            os.killpg(run.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.killpg(run.pid, signal.SIGKILL)
        raise AssertionError(f"processes of the run were left running after {stop_with!r}")
    if stopped and stop_with != signal.SIGKILL:  # a stop it could see: it says so, and not as a bug
        terminal.seek(0)
        said = " ".join(terminal.read().split())
        assert f"stopped ({stop_with.name}): finished work is kept; run the same command again to resume" in said
        assert run.returncode == 128 + stop_with
    terminal.close()
    return run.returncode, stopped


def _result(out: Path) -> tuple[dict, dict]:
    """What a run made: its dataset versions by stage, and its bundle's model files by content."""
    versions = {v.stage: v.id for v in Dataset.open(out / "dataset").info.versions}
    bundle = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "bundle").iterdir()
              if p.suffix in (".tflite", ".onnx", ".h")}
    return versions, bundle


@pytest.mark.slow
def test_a_run_stopped_anywhere_resumes_to_what_an_unstopped_run_makes(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    assert _run(recipe, tmp_path / "whole", tmp_path / "prefect-whole") == (0, False)
    expected = _result(tmp_path / "whole")

    out = tmp_path / "stopped"
    watcher = Watcher(out)
    watcher.start()
    for where, when, stop_with in KILLS:
        code, stopped = _run(recipe, out, tmp_path / "prefect", when, stop_with)
        assert stopped and code != 0, f"the run ended before it reached {where}"
        print(f"stopped during {where} with {stop_with.name}: exit code {code}, nothing left running")
    assert _run(recipe, out, tmp_path / "prefect") == (0, False)
    watcher.stopped.set()
    watcher.join()
    assert watcher.problems == []
    assert watcher.shards, "the watcher saw finished shards"
    assert _result(out) == expected


def test_a_worker_that_dies_fails_only_its_shard_and_the_rerun_does_only_that_one(tmp_path):
    with pytest.raises(EdgedistillError) as failed:
        run_shards(list(range(12)), shard_that_dies_on_4_and_7, tmp_path, shard_size=3, workers=2)
    message = failed.value.problem
    assert message.startswith("2 of 4 shards failed; the first: a worker process died in the middle of this shard, "
                              "2 times (killed by SIG"), message
    assert "the 2 finished shards are kept" in failed.value.hint
    rerun = run_shards(list(range(12)), shard_that_squares, tmp_path, shard_size=3, workers=2)
    assert rerun.ran == [1, 2]
    assert [record["square"] for output in rerun.outputs for record in output.failures] == [j * j for j in range(12)]
