"""Keyword clips mined from long recordings (labelers/recordings.py), with real forward passes of the packaged
Whisper tiny.en: recordings made here from espeak-ng sentences in a row, with pauses and noise, as WAV, MP3 and
M4A, where every keyword's start and end is known from how the recording was put together."""

from __future__ import annotations

import shutil
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgedistill.audio import audio_blocks, load_audio
from edgedistill.dataset import AudioShape, Dataset, MediaPolicy, OntologyClass, Provenance, Sample
from edgedistill.errors import EdgedistillError
from edgedistill.recipe import SILENCE, UNKNOWN, MiningSettings, is_keyword, load_recipe
from edgedistill.splits import split_by_group
from labelers.recordings import SOURCE, RecordingMiner, edge_in_pause, find_recordings, mine_recordings
from spoken_recordings import RATE, SENTENCES, SpokenWord, spoken_recording, write_recording

pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("ffmpeg")),
                                reason="needs the espeak-ng and ffmpeg command-line tools")

KEYWORDS = ["computer", "window"]
VOICE = "en-gb-x-rp+m3"  # an espeak-ng voice whose "window" tiny.en hears as a word ("Windo" in en-us)
FORMATS = ("wav", "mp3", "m4a")
TOLERANCE = 0.1  # seconds


def keyword_dataset(location: Path) -> Dataset:
    return Dataset.create(location, "mined", "keyword_spotting",
                          [OntologyClass(name=name) for name in [*KEYWORDS, UNKNOWN, SILENCE]],
                          MediaPolicy(sample_rate=RATE, clip_seconds=1.0))


def miner(**settings) -> RecordingMiner:
    return RecordingMiner(KEYWORDS, MiningSettings(**settings), RATE, 1.0)


def middle(start: float, end: float) -> float:
    return (start + end) / 2


@pytest.fixture(scope="module")
def talk(tmp_path_factory) -> tuple[Path, np.ndarray, list[SpokenWord]]:
    """The six sentences (four keywords) in WAV, MP3 and M4A, the audio, and the keywords' times."""
    folder = tmp_path_factory.mktemp("talk")
    audio, truth = spoken_recording(SENTENCES, voice=VOICE, seed=3, pause=(1.2, 2.4))
    for suffix in FORMATS:
        write_recording(folder / f"talk.{suffix}", audio)
    return folder, audio, truth


@pytest.fixture(scope="module")
def mined(talk, tmp_path_factory):
    """All three files mined, in windows asked to part in the middle of the third keyword."""
    folder, _, truth = talk
    dataset = keyword_dataset(tmp_path_factory.mktemp("mined") / "dataset")
    work = dataset.work_dir("recordings")
    edge = middle(truth[2].start, truth[2].end)
    settings = {"window_minutes": edge / 60, "unknown_per_minute": 30, "silence_per_minute": 12}
    return dataset, mine_recordings(dataset, find_recordings([str(folder)]), miner(**settings), work), work, settings


def clips_of(samples: list[Sample], suffix: str) -> list[Sample]:
    return [s for s in samples if s.provenance.params["file"].endswith(f".{suffix}")]


def test_a_window_of_any_format_is_the_same_stretch_as_in_the_whole_file(talk, tmp_path):
    folder, audio, _ = talk
    files = [folder / f"talk.{suffix}" for suffix in FORMATS]
    files += [write_recording(tmp_path / f"talk.{suffix}", audio) for suffix in ("opus", "flac")]
    for file in files:
        whole = load_audio(file, RATE)
        part = np.concatenate(list(audio_blocks(file, RATE, 1.0, start=5.0, end=9.0)))
        assert part.size == 4 * RATE
        # the same samples, not shifted; a lossy codec decoded from a seek differs by its own noise (< 2%)
        lossless = file.suffix in (".wav", ".flac")
        np.testing.assert_allclose(part, whole[5 * RATE:9 * RATE], atol=1e-6 if lossless else 2e-2, err_msg=file.name)
    original = np.concatenate(list(audio_blocks(folder / "talk.wav", RATE)))
    np.testing.assert_allclose(original, audio, atol=2 / 2**15)  # the WAV is the audio, in 16 bits


def test_each_keyword_is_cut_once_centred_on_the_word(talk, mined):
    folder, audio, truth = talk
    dataset, result, _, settings = mined
    # the windows part in a pause near the edge asked for, in the middle of a keyword
    edge = settings["window_minutes"] * 60
    moved = edge_in_pause(folder / "talk.wav", edge)
    pause = audio[round((moved - 0.05) * RATE):round((moved + 0.05) * RATE)]
    assert 0 < abs(moved - edge) <= 2 and np.sqrt(np.mean(pause ** 2)) < 0.01
    assert [row["file"] for row in result.recordings] == [str(folder / f"talk.{s}") for s in ("m4a", "mp3", "wav")]
    for suffix in FORMATS:
        keywords = [s for s in clips_of(result.samples, suffix) if is_keyword(s.class_name)]
        spoken = [min(truth, key=lambda w: abs(middle(w.start, w.end) - middle(s.provenance.params["start"],
                                                                              s.provenance.params["end"])))
                  for s in keywords]
        assert len(set(spoken)) == len(spoken), suffix  # no word cut twice, the one on the windows' edge neither
        # tiny.en hears every keyword of the WAV; decoded from MP3 or M4A, the context a window starts with may
        # make it mishear one
        assert len(spoken) == len(truth) if suffix == "wav" else len(spoken) >= len(truth) - 1, suffix
        for sample, word in zip(keywords, spoken):
            assert sample.class_name == word.word, (suffix, sample.provenance.params)
            cut = sample.provenance.params
            assert abs(middle(cut["start"], cut["end"]) - middle(word.start, word.end)) <= TOLERANCE, (suffix, cut)
            # what the cut calls the word lies on the word: Whisper starts a word up to ~0.2 s late, never early
            assert word.start - TOLERANCE <= cut["start"] < cut["end"] <= word.end + TOLERANCE, (suffix, cut)
            clip_start = middle(cut["start"], cut["end"]) - 0.5
            assert clip_start <= word.start and word.end <= clip_start + 1.0  # the whole word is in the clip
            label = sample.labels[0]
            assert label.span == pytest.approx((cut["start"] - clip_start, cut["end"] - clip_start), abs=1e-3)
            assert label.class_name in label.transcript.lower() and label.score == cut["probability"]
            assert 0 < label.score <= 1 and label.source.labeler == "whisper_mining"
            assert sample.provenance.source == SOURCE and sample.provenance.group == cut["file"]
            assert sample.shape == AudioShape(duration=1.0, sample_rate=RATE)
            if suffix == "wav":  # the clip is the recording's second around the word, sample for sample
                clip, first = load_audio(dataset.media_path(sample), RATE), round(clip_start * RATE)
                assert any(np.allclose(clip, audio[first + shift:first + shift + RATE], atol=2 / 2**15)
                           for shift in range(-RATE // 1000, RATE // 1000 + 1))  # provenance times: to the ms


def test_unknown_clips_hold_other_words_and_silence_clips_the_pauses(talk, mined):
    _, audio, truth = talk
    dataset, result, _, settings = mined
    for suffix in FORMATS:
        clips = clips_of(result.samples, suffix)
        unknown = [s for s in clips if s.class_name == UNKNOWN]
        silence = [s for s in clips if s.class_name == SILENCE]
        assert len(unknown) >= 2 and len(silence) >= 2, suffix
        for sample in unknown:
            cut = sample.provenance.params
            centre = middle(cut["start"], cut["end"])
            assert all(centre + 0.5 <= word.start or word.end <= centre - 0.5 for word in truth), cut  # no keyword
            assert sample.labels[0].transcript and cut["negative"] == "recorded"
        for sample in silence:
            clip = load_audio(dataset.media_path(sample), RATE)
            assert np.sqrt(np.mean(clip ** 2)) < 0.01, sample.provenance.params  # the noise floor, no speech
            assert sample.labels[0].span is None and sample.labels[0].score is None
        # spaced to the rate asked, in each of the two windows
        assert len(unknown) <= settings["unknown_per_minute"] * len(audio) / RATE / 60 + 2, suffix
    assert len({s.id for s in result.samples}) == len(result.samples)


def test_a_recording_never_sits_in_two_splits(mined, audio_sample_factory):
    dataset, result, _, _ = mined
    voices = [audio_sample_factory(dataset, "computer", f"voice-{i}", 300 + 40 * i) for i in range(12)]
    split = split_by_group(voices + result.samples, 0.2, 0.2, seed=0,
                           apart=lambda s: s.provenance.source == SOURCE)
    by_recording: dict[str, set] = {}
    for sample in split:
        by_recording.setdefault(sample.provenance.group, set()).add(sample.split)
    recordings = [splits for group, splits in by_recording.items() if group.startswith("/")]
    assert all(len(splits) == 1 for splits in by_recording.values())
    # three recordings, split among themselves: one in each split, whatever the voices do
    assert sorted(next(iter(splits)) for splits in recordings) == ["test", "train", "val"]


def test_a_rerun_redoes_only_the_window_whose_shard_is_gone(talk, mined):
    folder, _, _ = talk
    dataset, first, work, settings = mined
    shards = sorted(work.glob("shard-*.jsonl"))
    assert len(shards) == 6  # three files, two windows each
    again = mine_recordings(dataset, find_recordings([str(folder)]), miner(**settings), work)
    assert again.samples == first.samples and again.audio_hours_per_hour == 0  # all found on disk
    gone = shards[3]
    gone.unlink()
    before = {path: path.stat().st_mtime_ns for path in shards if path != gone}
    redone = mine_recordings(dataset, find_recordings([str(folder)]), miner(**settings), work)
    assert gone.exists() and {path: path.stat().st_mtime_ns for path in before} == before
    assert sorted(s.id for s in redone.samples) == sorted(s.id for s in first.samples)
    assert 0 < redone.audio_hours_per_hour


def test_unreadable_silent_and_keywordless_recordings_are_noted_and_the_rest_mined(tmp_path):
    folder = tmp_path / "calls"
    folder.mkdir()
    (folder / "broken.mp3").write_bytes(np.random.default_rng(0).bytes(3000))
    (folder / "notes.wav").write_text("not audio")
    (folder / "readme.txt").write_text("not a recording: not even looked at")
    write_recording(folder / "silent.wav", np.zeros(4 * RATE, np.float32))
    write_recording(folder / "hiss.wav", np.random.default_rng(0).normal(0, 0.003, 4 * RATE).astype(np.float32))
    audio, _ = spoken_recording([SENTENCES[2]], voice=VOICE, seed=1)
    write_recording(folder / "short.m4a", audio)
    dataset = keyword_dataset(tmp_path / "dataset")
    result = mine_recordings(dataset, find_recordings([str(folder)]), miner(silence_per_minute=30),
                             tmp_path / "work")
    assert sorted(Path(row["file"]).name for row in result.unreadable) == ["broken.mp3", "notes.wav"]
    assert all("not a readable audio file" in row["reason"] or "Format not recognised" in row["reason"]
               for row in result.unreadable), result.unreadable
    rows = {Path(row["file"]).name: row for row in result.recordings}
    assert rows["silent.wav"]["note"].startswith("nothing cut") and rows["silent.wav"][SILENCE] == 0
    assert rows["hiss.wav"]["note"] == "no speech heard" and rows["hiss.wav"][SILENCE] > 0
    assert rows["short.m4a"]["keyword"] == 1 and rows["short.m4a"]["note"] == ""
    with pytest.raises(EdgedistillError, match="does not exist"):
        find_recordings([str(tmp_path / "no-such-folder")])


def test_label_recordings_adds_the_clips_to_the_labelled_ones_and_splits_them_by_recording(
        talk, tmp_path, audio_sample_factory):
    from flows.cli import app
    from flows.keyword_spotting import LABELLED_STAGES, open_dataset, origins, split_step
    from flows.runs import RunPaths, newest

    folder, _, truth = talk
    recipe_path = tmp_path / "office.yaml"
    recipe_path.write_text("task: keyword_spotting\nname: office\nkeywords: [computer, window]\n")
    recipe = load_recipe(recipe_path)
    dataset = open_dataset(recipe, str(tmp_path / "run" / "dataset"))  # checked synthetic clips of 12 voices
    synthetic = [audio_sample_factory(dataset, KEYWORDS[i % 2], f"voice-{i}", 300 + 40 * i) for i in range(12)]
    checked = dataset.commit(synthetic, None, "whisper_check", {})
    broken = tmp_path / "broken.m4a"
    broken.write_bytes(b"\0" * 100)
    runner = CliRunner()
    files = [str(folder / f"talk.{suffix}") for suffix in FORMATS]
    result = runner.invoke(app, ["label", "recordings", str(recipe_path), *files, str(broken),
                                 "--out", str(tmp_path / "run")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "talk.wav" in result.output and f"{len(truth)} keyword" in result.output
    assert "skipped" in result.output and "broken.m4a" in result.output
    dataset = Dataset.open(tmp_path / "run" / "dataset")
    mined = next(v for v in dataset.info.versions if v.stage == "recordings")
    version = newest(dataset, *LABELLED_STAGES)  # what `train` reads: the checked clips and the mined ones
    assert version.stage == "with_recordings" and version.parent == checked.id
    assert version.counts["samples"] == len(synthetic) + mined.counts["samples"]
    assert version.counts["class:computer"] == 6 + 3 * 2
    split = dataset.samples(split_step(recipe, dataset, version).id)
    recordings = {s.provenance.group: s.split for s in split if s.provenance.source == SOURCE}
    assert sorted(recordings.values()) == ["test", "train", "val"]  # split among themselves, one each
    assert all(s.split == recordings[s.provenance.group] for s in split if s.provenance.source == SOURCE)
    test = [s for s in split if s.split == "test"]
    assert "recordings" in origins(split, test) and "synthetic" in origins(split, test)
    # a recording added later: only it is mined, and the clips of the others are kept as they were
    later = tmp_path / "later.wav"
    later.write_bytes((folder / "talk.wav").read_bytes())
    result = runner.invoke(app, ["label", "recordings", str(recipe_path), *files, str(broken), str(later),
                                 "--out", str(tmp_path / "run")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    dataset = Dataset.open(tmp_path / "run" / "dataset")
    again = [v for v in dataset.info.versions if v.stage == "recordings"][-1]
    report = dataset.report(again)
    assert again.parent == mined.id and report["recordings_mined_now"] == 1
    assert [Path(row["file"]).name for row in report["unreadable"]] == ["broken.m4a"]  # noted, not tried again
    before, after = dataset.samples(mined.id), dataset.samples(again.id)
    from_later = [s for s in after if s.provenance.group == str(later)]
    assert after == before + from_later and len(from_later) == len(clips_of(before, "wav"))
    # nothing readable: an error, and no version written
    before = Dataset.open(tmp_path / "run" / "dataset").info.versions
    result = runner.invoke(app, ["label", "recordings", str(recipe_path), str(broken), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "could be read" in str(result.exception)
    assert Dataset.open(tmp_path / "run" / "dataset").info.versions == before
    # the plain `label RECIPE` is still the recipe's labelling (here: nothing synthesised to check)
    result = runner.invoke(app, ["label", str(recipe_path), "--out", str(tmp_path / "run")])
    assert "no synthesize version" in str(result.exception)


def test_augmented_copies_are_held_out_figures_of_their_parents_origin():
    from flows.keyword_spotting import origins

    def sample(sample_id: str, source: str, **params) -> Sample:
        return Sample(id=sample_id, media="media/x.wav", kind="audio", shape=AudioShape(duration=1, sample_rate=RATE),
                      provenance=Provenance(source=source, params=params))

    samples = [sample("real", SOURCE), sample("voice", "espeak-ng"), sample("copy", "augment", parent="real"),
               sample("copy2", "augment", parent="copy"), sample("voice-copy", "augment", parent="voice")]
    assert origins(samples, samples) == ["recordings", "synthetic", "recordings", "recordings", "synthetic"]


def test_the_model_card_reports_mined_and_synthetic_test_clips_apart(tmp_path):
    from edgedistill.bundle import load_bundle
    from flows.run import summary_rows
    from tones import export_tones_bundle

    origins = ["synthetic", "recordings"] * 24  # the tones bundle's 48 test clips, half of each
    float_by_origin = {"synthetic": {"accuracy": 0.5}, "recordings": {"accuracy": 0.25}}
    bundle = export_tones_bundle(tmp_path / "tones", test_origins=origins,
                                 dataset_ref={"held_out_float": float_by_origin})
    manifest = load_bundle(bundle)
    by_origin = manifest.metrics["int8"]["by_origin"]
    assert {origin: figures["count"] for origin, figures in by_origin.items()} == {"recordings": 24, "synthetic": 24}
    overall = manifest.metrics["int8"]["accuracy"]
    assert overall == pytest.approx((by_origin["recordings"]["accuracy"] + by_origin["synthetic"]["accuracy"]) / 2)
    card = (bundle / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| mined from real recordings |"))
    assert row.split("|")[2:5] == [" 24 ", " 25.0% ", f" {100 * by_origin['recordings']['accuracy']:.1f}% "]
    assert any(name.startswith("int8 accuracy, held-out recordings (24 clips)") for name, _ in
               summary_rows(manifest, bundle))


def test_recordings_in_a_bucket_are_fetched_once_and_mined_like_local_ones(talk, bucket, tmp_path):
    import fsspec

    folder, _, truth = talk
    fsspec.filesystem("s3").put_file(str(folder / "talk.m4a"), f"{bucket}/calls/monday/talk.m4a")
    recordings = find_recordings([f"{bucket}/calls"])
    assert [r.location for r in recordings] == [f"{bucket}/calls/monday/talk.m4a"]
    dataset = keyword_dataset(tmp_path / "dataset")
    result = mine_recordings(dataset, recordings, miner(), tmp_path / "work")
    keywords = [s for s in result.samples if is_keyword(s.class_name)]
    assert len(keywords) >= len(truth) - 1
    assert {s.provenance.group for s in result.samples} == {f"{bucket}/calls/monday/talk.m4a"}
    assert len(list((tmp_path / "cache" / "recordings").iterdir())) == 1  # the local copy, made once


DASK_SCRIPT = """
import json, sys
from pathlib import Path
from prefect import flow
from prefect.client.orchestration import get_client
from edgedistill.dataset import Dataset
from edgedistill.recipe import MiningSettings
from edgedistill.shards import shards_run_by
from flows.run import prefect_shard_mapper, task_runner
from labelers.recordings import RecordingMiner, find_recordings, mine_recordings

location, recording, work, window_minutes = sys.argv[1:5]

@flow(task_runner=task_runner("local"))
def mine():
    miner = RecordingMiner(["computer", "window"], MiningSettings(window_minutes=float(window_minutes)), 16000, 1.0)
    with shards_run_by(prefect_shard_mapper("label")):
        return mine_recordings(Dataset.open(location), find_recordings([recording]), miner, Path(work)).samples

samples = mine()
with get_client(sync_client=True) as client:
    task_runs = [(r.name.rsplit("-", 1)[0], r.state_type.value) for r in client.read_task_runs()]
print(json.dumps({"samples": [s.model_dump(mode="json") for s in samples], "task_runs": task_runs}))
"""


@pytest.mark.slow
def test_windows_are_mined_on_a_local_dask_cluster_as_here(talk, tmp_path):
    folder, _, _ = talk
    dataset = keyword_dataset(tmp_path / "dataset")
    env = os.environ | {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-c", DASK_SCRIPT, dataset.location, str(folder / "talk.wav"),
                           str(tmp_path / "work"), "0.2"], env=env, capture_output=True, text=True, timeout=900,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(result["task_runs"]) == [["label-shard", "COMPLETED"]] * 2  # 20 s in windows of 12 s
    here = mine_recordings(dataset, find_recordings([str(folder / "talk.wav")]), miner(window_minutes=0.2),
                           tmp_path / "here").samples
    assert [Sample.model_validate(item) for item in result["samples"]] == here
