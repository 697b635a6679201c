import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgedistill.dataset import Dataset, OntologyClass, Store
from edgedistill.errors import EdgedistillError


def _dataset(tmp_path):
    return Dataset.create(tmp_path / "ds", "t", "keyword_spotting", [OntologyClass(name="yes"), OntologyClass(name="no")])


def test_versions_are_content_addressed_immutable_and_reloaded(tmp_path, audio_sample_factory):
    dataset = _dataset(tmp_path)
    samples = [audio_sample_factory(dataset, "yes", "v1", 440), audio_sample_factory(dataset, "no", "v2", 660)]
    first = dataset.commit(samples, None, "synthesize", {"n": 2})
    again = Dataset.open(dataset.location)
    assert [s.id for s in again.samples(first.id)] == [s.id for s in samples]
    assert first.counts["class:yes"] == 1 and first.counts["samples"] == 2
    # the same media is stored once
    assert dataset.add_media((Path(dataset.location) / samples[0].media).read_bytes(), "wav")[1] == samples[0].media
    assert len(list((Path(dataset.location) / "media").rglob("*.wav"))) == 2
    child = dataset.commit(samples[:1], first.id, "filter", {})
    assert Dataset.open(dataset.location).version().parent == first.id
    assert dataset.version(child.id[:6]).id == child.id


def test_changed_version_file_is_refused(tmp_path, audio_sample_factory):
    dataset = _dataset(tmp_path)
    info = dataset.commit([audio_sample_factory(dataset, "yes", "v1")], None, "synthesize", {})
    path = Path(dataset.location) / "versions" / f"{info.id}.jsonl"
    path.write_text(path.read_text().replace('"yes"', '"no"'))
    with pytest.raises(EdgedistillError, match="changed on disk"):
        dataset.samples(info.id)


def test_bad_manifest_line_names_the_field(tmp_path, audio_sample_factory):
    dataset = _dataset(tmp_path)
    info = dataset.commit([audio_sample_factory(dataset, "yes", "v1")], None, "synthesize", {})
    record = Path(dataset.location) / "history" / f"{info.key}.json"
    meta = json.loads(record.read_text())
    body = '{"id": "x", "media": "m", "kind": "video"}\n'
    import hashlib

    new_id = hashlib.sha256(body.encode()).hexdigest()[:16]
    (Path(dataset.location) / "versions" / f"{new_id}.jsonl").write_text(body)
    record.write_text(json.dumps(meta | {"id": new_id}))
    with pytest.raises(EdgedistillError, match="line 1.*\n.*kind"):
        Dataset.open(dataset.location).samples(new_id)
    assert info.id != new_id


def test_a_transcript_with_unicode_line_breaks_reads_back(tmp_path, audio_sample_factory):
    # JSON leaves U+2028 and U+0085 as they are, and a version is read line by line: by bytes, not str.splitlines
    dataset = _dataset(tmp_path)
    sample = audio_sample_factory(dataset, "yes", "v1")
    transcript = sample.labels[0].model_copy(update={"transcript": "yes\u2028yes\x85 yes"})
    said = sample.model_copy(update={"labels": [transcript]})
    info = dataset.commit([said, audio_sample_factory(dataset, "no", "v2", 660)], None, "mine", {})
    assert Dataset.open(dataset.location).samples(info.id)[0] == said


def test_invalid_dataset_json_is_a_clear_error(tmp_path):
    (tmp_path / "dataset.json").write_text('{"name": "x", "task": "dancing", "ontology": []}')
    with pytest.raises(EdgedistillError, match="task"):
        Dataset.open(tmp_path)
    with pytest.raises(EdgedistillError, match="no dataset.json"):
        Dataset.open(tmp_path / "nowhere")


def test_derive_reuses_finished_work_and_keeps_shards_until_commit(tmp_path, audio_sample_factory):
    dataset = _dataset(tmp_path)
    base = dataset.commit([audio_sample_factory(dataset, "yes", "v1")], None, "synthesize", {})
    calls = []

    def make(samples, work):
        calls.append(work)
        assert work.is_dir()
        return samples

    one = dataset.derive(base, "split", {"seed": 1}, make)
    two = dataset.derive(base, "split", {"seed": 1}, make)
    assert one.id == two.id and len(calls) == 1 and not calls[0].exists()
    reported = dataset.derive(base, "split", {"seed": 2}, lambda samples, work: (make(samples, work), {"lost": 0}))
    assert len(calls) == 2
    assert Dataset.open(dataset.location).report(reported) == {"lost": 0} and dataset.report(one) is None


def test_a_stage_of_each_sample_treats_only_what_is_new_or_changed_on_new_input(tmp_path, audio_sample_factory):
    dataset = _dataset(tmp_path)
    clips = [audio_sample_factory(dataset, "yes", f"v{i}", 300 + 50 * i) for i in range(4)]
    first = dataset.commit(clips[:3], None, "sources", {"folder": "a", "fingerprint": 1})
    treated = []

    def label(samples, work):  # a labeler: each sample on its own
        treated.append([s.id for s in samples])
        return [s.model_copy(update={"split": "train"}) for s in samples]

    labelled = dataset.derive_each(first, "label", {"model": "m"}, label)
    assert treated == [[s.id for s in clips[:3]]]
    assert dataset.report(labelled) == {"treated": 3, "taken_from_earlier": 0}
    # the folder changed: one clip gone, one renamed (so changed), one new
    renamed = clips[1].model_copy(update={"provenance": clips[1].provenance.model_copy(update={"group": "moved"})})
    second = dataset.commit([clips[0], renamed, clips[3]], first.id, "sources", {"folder": "a", "fingerprint": 2})
    assert dataset.earlier("sources", {"folder": "a", "fingerprint": 3}, ignoring=("fingerprint",)) == second
    assert dataset.earlier("sources", {"folder": "b", "fingerprint": 2}, ignoring=("fingerprint",)) is None
    relabelled = dataset.derive_each(second, "label", {"model": "m"}, label)
    assert treated[1] == [clips[1].id, clips[3].id]
    samples = dataset.samples(relabelled.id)
    assert [s.id for s in samples] == [clips[0].id, clips[1].id, clips[3].id] and {s.split for s in samples} == {"train"}
    assert samples[1].provenance.group == "moved"
    assert dataset.report(relabelled) == {"treated": 2, "taken_from_earlier": 1, "earlier_version": labelled.id}
    # other settings: everything is treated again; the same work again: nothing is
    dataset.derive_each(second, "label", {"model": "other"}, label)
    assert dataset.derive_each(second, "label", {"model": "m"}, label) == relabelled
    assert [len(ids) for ids in treated] == [3, 2, 3]


def test_crash_mid_stage_leaves_no_version_and_rerun_resumes(tmp_path, audio_sample_factory):
    """Kill a stage halfway: no half-written version, and its finished shard survives for the rerun."""
    dataset = _dataset(tmp_path)
    audio_sample_factory(dataset, "yes", "v1")
    script = textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        from edgedistill.dataset import Dataset
        dataset = Dataset.open({dataset.location!r})
        def make(samples, work):
            (work / "shard-0.done").write_text("x")
            os.kill(os.getpid(), signal.SIGKILL)
        dataset.derive(None, "synthesize", {{}}, make)
    """)
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == -signal.SIGKILL
    reopened = Dataset.open(dataset.location)
    assert reopened.info.versions == []
    assert not list((Path(dataset.location) / "versions").glob("*")) if (Path(dataset.location) / "versions").exists() else True
    shards = list((Path(dataset.location) / "work").rglob("shard-0.done"))
    assert len(shards) == 1
    seen = []
    reopened.derive(None, "synthesize", {}, lambda samples, work: seen.append(sorted(os.listdir(work))) or [])
    assert seen == [["shard-0.done"]]


def test_recreating_with_another_ontology_is_refused(tmp_path):
    _dataset(tmp_path)
    with pytest.raises(EdgedistillError, match="different"):
        Dataset.create(tmp_path / "ds", "t", "keyword_spotting", [OntologyClass(name="maybe")])


def test_a_dataset_in_a_bucket_keeps_its_files_there_and_media_in_a_local_cache(bucket, audio_sample_factory,
                                                                                 tmp_path, monkeypatch):
    import fsspec

    location = f"{bucket}/teams/words/"
    dataset = Dataset.create(location, "t", "keyword_spotting", [OntologyClass(name="yes")])
    assert dataset.location == f"{bucket}/teams/words" and not dataset.store.is_local
    samples = [audio_sample_factory(dataset, "yes", "v1", 440), audio_sample_factory(dataset, "yes", "v2", 660)]
    base = dataset.commit(samples, None, "synthesize", {})
    split = dataset.derive(base, "split", {}, lambda parent, work: (parent[:1], {"kept": 1}))
    assert dataset.work_dir("x").is_relative_to(tmp_path / "cache")  # unfinished work stays on this machine

    store = fsspec.filesystem("s3")
    prefix = bucket.removeprefix("s3://") + "/teams/words"
    held = sorted(path.removeprefix(prefix + "/") for path in store.find(prefix))
    assert held == sorted(["dataset.json", f"versions/{base.id}.jsonl", f"versions/{split.id}.jsonl",
                           f"history/{base.key}.json", f"history/{split.key}.json",
                           f"reports/{split.report.split('/')[-1]}", *(s.media for s in samples)])

    reopened = Dataset.open(location)  # as another machine sees it, with an empty cache
    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "other-machine"))
    assert reopened.samples(split.id) == samples[:1] and reopened.report(split) == {"kept": 1}
    local = reopened.media_paths(samples)  # fetched together
    assert all(path.is_relative_to(tmp_path / "other-machine") for path in local)
    assert [path.read_bytes() for path in local] == [store.cat_file(f"{prefix}/{s.media}") for s in samples]

    monkeypatch.setenv("EDGEDISTILL_CACHE", str(tmp_path / "third-machine"))
    store.pipe_file(f"{prefix}/{samples[1].media}", b"not the clip")
    with pytest.raises(EdgedistillError, match="was changed"):
        reopened.media_paths(samples)
    store.rm_file(f"{prefix}/{samples[1].media}")
    with pytest.raises(EdgedistillError, match="is missing"):
        reopened.media_path(samples[1])


def test_a_bucket_that_cannot_be_reached_is_a_clear_error(bucket):
    with pytest.raises(EdgedistillError, match=r"cannot (write|look for) s3://no-such-bucket/x/dataset.json"):
        Dataset.create("s3://no-such-bucket/x", "t", "keyword_spotting", [OntologyClass(name="yes")])
    with pytest.raises(EdgedistillError, match="no dataset.json"):
        Dataset.open(f"{bucket}/nothing-here")
    with pytest.raises(EdgedistillError, match="not a location fsspec knows"):
        Dataset.open("nosuchprotocol://x/y")


def test_parallel_media_writes_store_everything_before_the_block_ends(bucket, audio_sample_factory):
    import fsspec

    dataset = Dataset.create(f"{bucket}/many", "t", "keyword_spotting", [OntologyClass(name="yes")])
    with dataset.parallel_media_writes():
        samples = [audio_sample_factory(dataset, "yes", "v", 300 + 10 * i) for i in range(40)]
    stored = fsspec.filesystem("s3").find(f"{bucket[5:]}/many/media")
    assert sorted(stored) == sorted(f"{bucket[5:]}/many/{s.media}" for s in samples)

    nowhere = Dataset(Store("s3://no-such-bucket/x"), dataset.info)
    with pytest.raises(EdgedistillError, match="cannot (write|look for) s3://no-such-bucket/x/media/"):
        with nowhere.parallel_media_writes():
            audio_sample_factory(nowhere, "yes", "v")
