"""The dataset model: a folder of content-addressed media and immutable, hashed versions.

Layout (DESIGN.md):
  dataset.json              name, task, ontology, media policy; written once
  versions/<hash>.jsonl     one Sample per line; never changed once written
  history/<key>.json        the version one stage run made (its parent, stage, params, counts): the history
  media/<aa>/<sha256>.<ext> every clip or image, stored once

No file is ever read, changed and written back, so two processes (or machines) writing the same dataset
cannot undo each other's work: each version is one file, and so is each entry of the history. Two machines
that do the same work at once (their locks are local) both go on from the version recorded first: a history
entry is written only where there is none yet.

The folder is a local path or an fsspec URL (s3://bucket/faces; gs:// and az:// with gcsfs or
adlfs). Every local write goes to a temporary file first and is renamed into place, and an object
store writes an object whole, so a crash or Ctrl-C leaves each version complete or absent. Stages
read media as local files: those of a dataset in object storage are fetched once into a local,
content-addressed cache (`cache_dir()`), which every dataset on the machine shares.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import io
import json
import os
import shutil
import socket
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer
from pydantic_core import PydanticSerializationError

from edgedistill.errors import EdgedistillError, describe_validation_error

Task = Literal["detection", "keyword_spotting", "classification"]
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = get_args(Split)
ReviewStatus = Literal["auto", "accepted", "corrected", "rejected"]


class _Strict(BaseModel):
    # JSON has no NaN or infinity: one in a box or a duration would be written as null and never read back
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class LabelSource(_Strict):
    """Who made a label: a labeler plugin, the model it ran, and that model's version."""

    labeler: str
    model: str | None = None
    version: str | None = None


class LabelVerdict(_Strict):
    """What a checking model (the vision-language verifier) said of a label, and why. A relabelled
    label carries its new class, and `was` the old one; a rejected one stays, for people to decide."""

    outcome: Literal["accepted", "relabelled", "rejected"]
    reason: str
    by: LabelSource
    was: str | None = None


class Label(_Strict):
    class_name: str
    box: tuple[float, float, float, float] | None = None  # x, y, width, height in pixels
    mask: dict[str, Any] | None = None  # COCO RLE: {"size": [h, w], "counts": ...}
    span: tuple[float, float] | None = None  # start, end in seconds (audio)
    transcript: str | None = None
    score: float | None = None
    source: LabelSource
    verdict: LabelVerdict | None = None

    @model_serializer(mode="wrap")
    def _no_empty_verdict(self, handler: Callable[[Label], dict[str, Any]]) -> dict[str, Any]:
        # a label nobody checked is written as before verdicts existed: the same versions, the same ids
        data = handler(self)
        if data.get("verdict") is None:
            data.pop("verdict", None)
        return data

    @property
    def doubted(self) -> bool:
        """A checking model relabelled or rejected it: people should look."""
        return self.verdict is not None and self.verdict.outcome != "accepted"


class Review(_Strict):
    status: ReviewStatus = "auto"
    reviewer: str | None = None
    at: datetime | None = None


class AudioShape(_Strict):
    duration: float
    sample_rate: int


class ImageShape(_Strict):
    width: int
    height: int


class Provenance(_Strict):
    """Where a sample came from. `group` ties samples that must share a split (one voice)."""

    source: str
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    group: str | None = None


class Sample(_Strict):
    id: str
    media: str  # relative to the dataset folder
    kind: Literal["audio", "image"]
    shape: AudioShape | ImageShape
    split: Split | None = None
    provenance: Provenance
    labels: list[Label] = Field(default_factory=list)
    review: Review = Field(default_factory=Review)

    @property
    def class_name(self) -> str | None:
        """The class of a single-label sample (keyword spotting, classification)."""
        return self.labels[0].class_name if self.labels else None


class OntologyClass(_Strict):
    name: str
    prompts: list[str] = Field(default_factory=list)
    negative_prompts: list[str] = Field(default_factory=list)
    threshold: float | None = None


class MediaPolicy(_Strict):
    sample_rate: int | None = None
    clip_seconds: float | None = None
    image_size: tuple[int, int] | None = None


class VersionInfo(_Strict):
    id: str = Field(pattern=r"^[0-9a-f]{16}$")  # sha256 of the manifest file, shortened
    parent: str | None
    stage: str = Field(pattern=r"^[\w.-]+$")  # a plain name: it names the report file
    params: dict[str, Any] = Field(default_factory=dict)
    key: str  # hash of (parent, stage, params): the same work twice finds this version
    counts: dict[str, int] = Field(default_factory=dict)
    # reports/<stage>-<key>.json: what the stage saw (clips lost per voice, ...)
    report: str | None = Field(None, pattern=r"^reports/[\w.-]+\.json$")
    created: datetime


class DatasetInfo(_Strict):
    name: str
    task: Task
    ontology: list[OntologyClass]
    media: MediaPolicy = Field(default_factory=MediaPolicy)
    # read from history/ (and, for datasets written before it, from dataset.json), oldest first
    versions: list[VersionInfo] = Field(default_factory=list)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage_key(parent: str | None, stage: str, params: dict[str, Any]) -> str:
    """The identity of a piece of work: the same stage with the same inputs gives the same key."""
    blob = json.dumps({"parent": parent, "stage": stage, "params": params}, sort_keys=True, default=str)
    return sha256_bytes(blob.encode())[:16]


FETCH_BATCH = 256  # media fetched from object storage in one round of concurrent requests
WRITE_THREADS = 16  # media written to object storage at once inside `parallel_media_writes`

_UMASK = os.umask(0)
os.umask(_UMASK)


def cache_dir() -> Path:
    """This machine's cache: media of datasets in object storage, and their stages' unfinished work."""
    configured = os.environ.get("EDGEDISTILL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgedistill" / "datasets"


def write_atomic(path: Path, data: bytes, exclusive: bool = False) -> bool:
    """Write a file so that readers see the old content or the new one, never a part. `exclusive`: only when
    there is no such file yet; False, and nothing written, when there is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; keep the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            try:
                os.link(tmp, path)  # unlike a rename, fails when the file is there
            except FileExistsError:
                os.unlink(tmp)
                return False
            except OSError:  # a filesystem without hard links (FAT, some mounts): renamed, exclusive no more
                pass
            else:
                os.unlink(tmp)
                return True
        os.replace(tmp, path)
        return True
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _filesystem(location: str | Path):
    """The fsspec filesystem and path of a folder's location; local paths are made absolute."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(str(location))
    except ImportError as error:  # fsspec says which package: "Install s3fs to access S3"
        raise EdgedistillError(f"reaching {location} needs a filesystem package: {error}",
                               "pip install 'edgedistill[s3]' for s3://, gcsfs for gs://, adlfs for az://") from None
    except ValueError as error:
        raise EdgedistillError(f"{location} is not a location fsspec knows: {error}",
                               "give a local folder or a URL such as s3://bucket/name") from None
    return fs, (str(Path(path).resolve()) if "file" in fs.protocol else path.rstrip("/"))


class Store:
    """A folder of files, local or at an fsspec URL, each read and written whole: a dataset, or the
    team's photos."""

    def __init__(self, location: str | Path) -> None:
        self.fs, self.base = _filesystem(location)
        self.is_local = "file" in self.fs.protocol
        self.location = self.base if self.is_local else self.fs.unstrip_protocol(self.base)

    def path(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def exists(self, relative: str) -> bool:
        return self._call("look for", relative, lambda: self.fs.exists(self.path(relative)))

    def is_folder(self) -> bool:
        return self._call("look for", "", lambda: self.fs.isdir(self.base))

    def details(self) -> dict[str, Any] | None:
        """fsspec's details (size, mtime or ETag, ...) of the location itself when it is a file, else None."""
        return self._call("look for", "", lambda: self.fs.info(self.base) if self.fs.isfile(self.base) else None)

    def files(self) -> dict[str, dict[str, Any]]:
        """Every file under the folder: relative path -> fsspec's details (size, mtime or ETag, ...)."""
        found = self._call("list", "", lambda: self.fs.find(self.base, detail=True))
        return {path[len(self.base) + 1:]: details for path, details in found.items()}

    def names(self, folder: str) -> list[str]:
        """The names of the files in a folder (none when it does not exist), as they are now."""
        def names() -> list[str]:
            self.fs.invalidate_cache(self.path(folder))  # another process may have written since
            try:
                return [path.rsplit("/", 1)[-1] for path in self.fs.ls(self.path(folder), detail=False)]
            except FileNotFoundError:
                return []

        return self._call("list", folder, names)

    def read(self, relative: str) -> bytes | None:
        def read() -> bytes | None:
            try:
                return self.fs.cat_file(self.path(relative))
            except FileNotFoundError:
                return None

        return self._call("read", relative, read)

    def read_many(self, relatives: list[str]) -> dict[str, bytes]:
        """Many files in one round of concurrent requests; missing ones are left out."""
        found = self._call("read", f"{len(relatives)} files under {relatives[0]}",
                           lambda: self.fs.cat([self.path(r) for r in relatives], on_error="omit"))
        return {r: found[self.path(r)] for r in relatives if self.path(r) in found}

    def fetch(self, target: Path) -> None:
        """The location (a file) copied to the local file `target`, streamed to disk, renamed into place once whole."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            self._call("read", "", lambda: self.fs.get_file(self.base, str(partial)))
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    def write(self, relative: str, data: bytes, exclusive: bool = False) -> bool:
        """`exclusive`: only when the file is not there yet, in one step (on S3 a conditional PUT), so that of two
        writers at once one gets True and the other False, with nothing written."""
        if self.is_local:
            return write_atomic(Path(self.path(relative)), data, exclusive)

        def put() -> bool:  # one PUT: an object store shows the whole object or none of it
            try:
                self.fs.pipe_file(self.path(relative), data, mode="create" if exclusive else "overwrite")
                return True
            except OSError:  # FileExistsError; some S3 servers answer 412 without saying which condition failed
                if exclusive and self.fs.exists(self.path(relative)):
                    return False
                raise

        return self._call("write", relative, put)

    def _call(self, doing: str, relative: str, action: Callable[[], Any]) -> Any:
        if self.is_local:  # a local error (permissions, a full disk) speaks for itself
            return action()
        try:
            return action()
        except Exception as error:  # s3fs and friends raise OSErrors, botocore its own (no credentials, ...)
            raise EdgedistillError(f"cannot {doing} {self.location}/{relative}: {type(error).__name__}: {error}",
                                   "check that the bucket exists and this machine's credentials for it "
                                   "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; AWS_ENDPOINT_URL for MinIO "
                                   "and the like)") from None


class Dataset:
    """A dataset folder. Open one with `Dataset.open` or make one with `Dataset.create`."""

    def __init__(self, store: Store, info: DatasetInfo) -> None:
        self.store = store
        self.location = store.location  # an absolute local path, or a URL
        self.info = info
        self._writes: tuple[ThreadPoolExecutor, list[Future]] | None = None

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(cls, location: str | Path, name: str, task: Task, ontology: list[OntologyClass],
               media: MediaPolicy | None = None) -> "Dataset":
        """Make a new dataset, or open the existing one at `location` if it describes the same data."""
        dataset = cls(Store(location), DatasetInfo(name=name, task=task, ontology=ontology,
                                                   media=media or MediaPolicy()))
        if dataset.store.exists("dataset.json"):
            existing = cls.open(location)
            same = existing.info.model_dump(exclude={"versions"}) == dataset.info.model_dump(exclude={"versions"})
            if not same:
                raise EdgedistillError(
                    f"{dataset.location} already holds a dataset with a different name, task, ontology or media policy",
                    "use another --out folder, or delete this one to start over",
                )
            return existing
        dataset._save_info()
        return dataset

    @classmethod
    def open(cls, location: str | Path) -> "Dataset":
        store = Store(location)
        data = store.read("dataset.json")
        if data is None:
            raise EdgedistillError(f"{store.location} is not a dataset: it has no dataset.json",
                                   "pass the folder that `edgedistill run` or `generate` made")
        try:
            info = DatasetInfo.model_validate_json(data)
        except ValidationError as error:
            raise EdgedistillError(f"{store.location}/dataset.json is not a valid dataset description:\n"
                                   f"{describe_validation_error(error)}",
                                   "restore it from a backup or recreate the dataset") from None
        info.versions = _newest_per_key(info.versions + _read_history(store))
        return cls(store, info)

    def _save_info(self) -> None:
        self.store.write("dataset.json", self.info.model_dump_json(indent=2, exclude={"versions"}).encode())

    # -- media -----------------------------------------------------------------------------
    def add_media(self, data: bytes, ext: str) -> tuple[str, str]:
        """Store media bytes by content; return (sha256, path relative to the dataset)."""
        digest = sha256_bytes(data)
        relative = f"media/{digest[:2]}/{digest}.{ext.lstrip('.')}"
        if self._writes is None:
            self._store_media(relative, data)
        else:
            pool, pending = self._writes
            pending.append(pool.submit(self._store_media, relative, data))
        if not self.store.is_local and not (cache_dir() / relative).exists():
            write_atomic(cache_dir() / relative, data)  # the next stage reads it here without a download
        return digest, relative

    def _store_media(self, relative: str, data: bytes) -> None:
        if not self.store.exists(relative):
            self.store.write(relative, data)

    @contextlib.contextmanager
    def parallel_media_writes(self) -> Iterator["Dataset"]:
        """Inside this block `add_media` hands a remote dataset's new media to a pool of threads, so
        that requests overlap; the block ends once every one is stored, and raises the first failure.
        A shard wraps its loop in it: the samples it returns never name media that are not stored."""
        if self.store.is_local or self._writes is not None:
            yield self
            return
        pending: list[Future] = []
        with ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="media-write") as pool:
            self._writes = (pool, pending)
            try:
                yield self
            finally:
                self._writes = None
        failure = next((future.exception() for future in pending if future.exception()), None)
        if failure is not None:
            raise failure

    def media_path(self, sample: Sample) -> Path:
        """The sample's media as a local file."""
        return self.media_file(sample.media)

    def media_paths(self, samples: list[Sample]) -> list[Path]:
        """`media_path` of each sample; those not in the cache yet are fetched together."""
        if not self.store.is_local:
            missing = sorted({s.media for s in samples if not (cache_dir() / s.media).exists()})
            for start in range(0, len(missing), FETCH_BATCH):
                for relative, data in self.store.read_many(missing[start:start + FETCH_BATCH]).items():
                    self._cache(relative, data)
        return [self.media_path(s) for s in samples]

    def with_media(self, samples: Iterable[Sample]) -> Iterator[tuple[Sample, Path]]:
        """Each sample with its `media_path`, fetched FETCH_BATCH at a time: a stream of samples stays one."""
        batch: list[Sample] = []
        for sample in samples:
            batch.append(sample)
            if len(batch) == FETCH_BATCH:
                yield from zip(batch, self.media_paths(batch))
                batch = []
        yield from zip(batch, self.media_paths(batch))

    def media_file(self, relative: str) -> Path:
        """A stored media file (`media/<aa>/<sha256>.<ext>`) as a local file, fetched once if remote."""
        if self.store.is_local:
            path = Path(self.store.path(relative))
            if not path.is_file():
                raise EdgedistillError(f"{self.location}/{relative} is missing",
                                       "media are immutable: rerun the stage that made the sample to restore it")
            return path
        cached = cache_dir() / relative
        if not cached.exists():
            self._cache(relative, self.store.read(relative))
        return cached

    def _cache(self, relative: str, data: bytes | None) -> None:
        if data is None or sha256_bytes(data) != Path(relative).stem:
            raise EdgedistillError(f"{self.location}/{relative} is missing or was changed",
                                   "media are immutable: rerun the stage that made the sample to restore it")
        write_atomic(cache_dir() / relative, data)

    def work_dir(self, key: str) -> Path:
        """Where a stage keeps its finished shards until its version is in (local, for speed)."""
        if self.store.is_local:
            return Path(self.store.path("work")) / key
        return cache_dir() / "work" / sha256_bytes(self.location.encode())[:16] / key

    # -- versions --------------------------------------------------------------------------
    @property
    def head(self) -> VersionInfo | None:
        return self.info.versions[-1] if self.info.versions else None

    def version(self, version_id: str | None = None) -> VersionInfo:
        """A version by id (or unique prefix); the newest one when no id is given."""
        if not self.info.versions:
            raise EdgedistillError(f"dataset {self.location} has no versions yet", "run `edgedistill generate` first")
        if version_id is None:
            return self.info.versions[-1]
        # two stages may make identical content (one that changed nothing): same id, same data
        matches = [v for v in self.info.versions if v.id.startswith(version_id)]
        if len({v.id for v in matches}) != 1:
            known = ", ".join(v.id for v in self.info.versions)
            raise EdgedistillError(f"no single version of {self.info.name} matches '{version_id}'",
                                   f"known versions: {known}")
        return matches[-1]

    def find_version(self, parent: str | None, stage: str, params: dict[str, Any]) -> VersionInfo | None:
        """The version this exact work made before, if any (how reruns skip finished stages)."""
        key = stage_key(parent, stage, params)
        return next((v for v in self.info.versions if v.key == key), None)

    def earlier(self, stage: str, params: dict[str, Any], ignoring: tuple[str, ...] = ()) -> VersionInfo | None:
        """The newest version `stage` made with these params, but for those named in `ignoring` (the stage's
        inputs, such as a folder's fingerprint), from whatever parent: the work a rerun on new input builds on."""
        def deciding(given: dict[str, Any]) -> str:
            return stage_key(None, stage, {k: v for k, v in given.items() if k not in ignoring})

        wanted = deciding(params)
        return next((v for v in reversed(self.info.versions) if v.stage == stage and deciding(v.params) == wanted),
                    None)

    def lineage(self, version: VersionInfo) -> Iterator[VersionInfo]:
        """The version, then its parent, and so on to the first; each entry once. A stage that changed nothing
        made a version with its parent's id: the parent is then the other entry with that id."""
        unvisited = [v for v in self.info.versions if v != version]
        current = version
        while current.parent:
            yield current
            parents = [v for v in unvisited if v.id == current.parent]
            if not parents:
                raise EdgedistillError(f"the history of {self.location} is broken: the parent "
                                       f"{current.parent} of version {current.id} is not another version in it",
                                       "restore its history/ folder from a backup, or recreate the dataset")
            current = parents[-1]
            unvisited.remove(current)
        yield current

    def samples(self, version_id: str | None = None) -> list[Sample]:
        with _long_lived():
            return list(self.iter_samples(version_id))

    def iter_samples(self, version_id: str | None = None) -> Iterator[Sample]:
        """A version's samples one at a time: work that needs no list of them all (an export) holds only
        the file's bytes, a small share of what the samples take as objects."""
        info = self.version(version_id)
        path = f"versions/{info.id}.jsonl"
        data = self.store.read(path)
        if data is None or sha256_bytes(data)[:16] != info.id:
            raise EdgedistillError(f"version {info.id} of {self.location} is missing or was changed on disk",
                                   "versions are immutable: rerun the stage that made it to rebuild it")
        for number, line in enumerate(io.BytesIO(data), start=1):  # split at \n only, as written
            try:
                yield Sample.model_validate_json(line)
            except ValidationError as error:
                raise EdgedistillError(f"{self.location}/{path} line {number} is not a valid sample:\n"
                                       f"{describe_validation_error(error)}",
                                       "rerun the stage that made this version") from None

    def commit(self, samples: Iterable[Sample], parent: str | None, stage: str,
               params: dict[str, Any], report: dict[str, Any] | None = None, first_wins: bool = False) -> VersionInfo:
        """Write a new immutable version and record it in the history. All of it is made before any of it
        is written, so that a commit that cannot be recorded leaves nothing behind.

        `first_wins`: when the history holds a version of this work already (another machine did it too, and
        finished first), that one is returned and this one is not recorded: every machine goes on from the same
        version, even when theirs differ in their bytes (labels made on two GPUs)."""
        samples = list(samples)
        ids = Counter(s.id for s in samples)
        duplicated = [sample_id for sample_id, count in ids.items() if count > 1]
        if duplicated:
            raise EdgedistillError(f"stage {stage} produced duplicate sample ids: {duplicated[:5]}",
                                   "this is a bug in that stage; please report it")
        try:  # everything is made, and checked, before anything is written
            lines = io.BytesIO()  # not a list of lines, their join and its encoding: half the memory
            for sample in samples:
                lines.write(sample.model_dump_json().encode() + b"\n")
            body = lines.getvalue()
            version_id, key = sha256_bytes(body)[:16], stage_key(parent, stage, params)
            report_path = None if report is None else f"reports/{stage}-{key}.json"
            report_json = None if report is None else json.dumps(report, indent=2, default=str).encode()
            info = VersionInfo(id=version_id, parent=parent, stage=stage, params=params, key=key,
                               counts=count_samples(samples), report=report_path, created=datetime.now(timezone.utc))
            record = info.model_dump_json(indent=2).encode()
        except (ValueError, TypeError, PydanticSerializationError) as error:  # ValidationError is a ValueError
            raise EdgedistillError(f"stage {stage!r} made a version that cannot be recorded: {error}",
                                   "this is a bug in that stage; please report it") from None
        if first_wins and (recorded := self._recorded(key)) is not None:
            return recorded
        if report_json is not None:
            self.store.write(report_path, report_json)
        self.store.write(f"versions/{version_id}.jsonl", body)
        if not self.store.write(f"history/{key}.json", record, exclusive=first_wins):  # now the version is in
            return self._recorded(key)  # or the other machine's, recorded in the moment between
        self.info.versions = _newest_per_key([*self.info.versions, info])
        return info

    def _recorded(self, key: str) -> VersionInfo | None:
        """The version the history holds for a piece of work, as it is now."""
        relative = f"history/{key}.json"
        data = self.store.read(relative)
        if data is None:
            return None
        info = _version_record(self.store, relative, data)
        self.info.versions = _newest_per_key([*self.info.versions, info])
        return info

    def derive(self, parent: VersionInfo | None, stage: str, params: dict[str, Any],
               make: Callable[[list[Sample], Path], "list[Sample] | tuple[list[Sample], dict]"]) -> VersionInfo:
        """Run one stage over `parent` into a new version, or return the version it made before.

        `make(parent_samples, work_dir)` does the work and returns the new samples, or the samples
        and a report; it may keep finished shards in work_dir, which survives a crash so that a
        rerun resumes, and is removed once the version is in.
        """
        parent_id = parent.id if parent else None
        done = self.find_version(parent_id, stage, params)
        if done is not None:
            return done
        work = self.work_dir(stage_key(parent_id, stage, params))
        with _only_runner(work, f"stage {stage} of {self.location}"):
            # another process may have finished this work while this one waited to start it
            self.info.versions = _newest_per_key(self.info.versions + _read_history(self.store))
            done = self.find_version(parent_id, stage, params)
            if done is not None:
                return done
            work.mkdir(parents=True, exist_ok=True)
            made = make(self.samples(parent_id) if parent_id else [], work)
            samples, report = made if isinstance(made, tuple) else (made, None)
            info = self.commit(samples, parent_id, stage, params, report, first_wins=True)
            shutil.rmtree(work, ignore_errors=True)
        return info

    def derive_from_input(self, stage: str, params: dict[str, Any], found: str,
                          make: Callable[[VersionInfo | None, list[Sample], Path],
                                         "list[Sample] | tuple[list[Sample], dict]"]) -> VersionInfo:
        """`derive` for a stage that reads input from outside the dataset (a folder of photos, recordings), with
        `params[found]` naming what it found there. The first run makes a version from nothing; a run that finds
        the input unchanged returns the version it made; one that finds it changed makes the next version from
        that one: `make(earlier, its_samples, work_dir)` keeps what did not change and reads only what did."""
        earlier = self.earlier(stage, params, ignoring=(found,))
        if earlier is not None and earlier.key == stage_key(earlier.parent, stage, params):
            return earlier
        return self.derive(earlier, stage, params, lambda kept, work: make(earlier, kept, work))

    def derive_each(self, parent: VersionInfo, stage: str, params: dict[str, Any],
                    make: Callable[[list[Sample], Path], list[Sample]]) -> VersionInfo:
        """`derive` for a stage that treats each sample on its own (a labeler): a sample that an earlier version
        of this stage, with these params, already treated as it is now is taken from that version, and `make`
        sees only the others. A scheduled run that finds ten new photos among thousands labels ten."""
        def make_new(samples: list[Sample], work: Path) -> tuple[list[Sample], dict[str, Any]]:
            earlier = self.earlier(stage, params)
            known = self._treated(earlier, samples) if earlier is not None else {}
            made = {s.id: s for s in make([s for s in samples if s.id not in known], work)}
            report = {"treated": len(made), "taken_from_earlier": len(known)}
            if known:
                report["earlier_version"] = earlier.id
            return [known.get(s.id) or made[s.id] for s in samples if s.id in known or s.id in made], report

        return self.derive(parent, stage, params, make_new)

    def _treated(self, earlier: VersionInfo, samples: list[Sample]) -> dict[str, Sample]:
        """What `earlier` made of each of `samples` that its parent held exactly as it is now."""
        before = {s.id: s for s in self.iter_samples(earlier.parent)} if earlier.parent else {}
        unchanged = {s.id for s in samples if before.get(s.id) == s}
        return {s.id: s for s in self.iter_samples(earlier.id) if s.id in unchanged}

    def report(self, version: VersionInfo) -> dict[str, Any] | None:
        """The report a stage left with its version, if it left one."""
        data = self.store.read(version.report) if version.report else None
        try:
            return json.loads(data) if data is not None else None
        except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, or nested too deeply
            raise EdgedistillError(f"{self.location}/{version.report} is not a readable report: {error}",
                                   f"rerun the stage that made version {version.id} to write it again") from None


@contextlib.contextmanager
def _only_runner(work: Path, what: str) -> Iterator[None]:
    """One process at a time does a piece of work (on this machine: its work folder is local). A second one
    gets an error naming the first, instead of the two sharing, and one deleting, a folder of finished shards.
    The lock is the kernel's (flock), so a process that is killed lets go of it."""
    lock_path = work.with_name(f"{work.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        lock = open(lock_path, "a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip()
            lock.close()
            raise EdgedistillError(f"{what} is being run by another edgedistill process: {holder}",
                                   "wait for it to finish (then run again: its work is kept), or stop it") from None
        if lock_path.exists() and os.stat(lock_path).st_ino == os.fstat(lock.fileno()).st_ino:
            break
        lock.close()  # the file was removed by the process that just finished: lock the new one
    with lock:
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now():%Y-%m-%d %H:%M:%S} "
                   f"({' '.join(sys.argv)[:200]})")
        lock.flush()
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)  # still locked: a later process makes and locks a new file


def _read_history(store: Store) -> list[VersionInfo]:
    names = [f"history/{name}" for name in store.names("history") if name.endswith(".json")]
    found = store.read_many(names) if names else {}
    return [_version_record(store, relative, data) for relative, data in found.items()]


def _version_record(store: Store, relative: str, data: bytes) -> VersionInfo:
    try:
        return VersionInfo.model_validate_json(data)
    except ValidationError as error:
        raise EdgedistillError(f"{store.location}/{relative} is not a valid version record:\n"
                               f"{describe_validation_error(error)}",
                               "delete it and rerun the stage that made it") from None


def _newest_per_key(versions: list[VersionInfo]) -> list[VersionInfo]:
    """The history, oldest first: for each piece of work (its key), the version it made last."""
    newest = {v.key: v for v in sorted(versions, key=lambda v: v.created)}
    return sorted(newest.values(), key=lambda v: v.created)


@contextlib.contextmanager
def _long_lived() -> Iterator[None]:
    """What is made inside goes straight to the cycle collector's oldest generation. A version's samples are
    hundreds of thousands of objects that all live on; made under the collector, they are walked again and
    again as they grow (three quarters of the time of reading 100,000 samples, and more than linear)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if not gc.get_freeze_count():  # (a process that froze objects of its own keeps them frozen)
            gc.freeze()  # every tracked object into the permanent generation, and back into the oldest one,
            gc.unfreeze()  # with no walk over them
        if enabled:
            gc.enable()


def count_samples(samples: list[Sample]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for sample in samples:
        counts["samples"] += 1
        if sample.split:
            counts[f"split:{sample.split}"] += 1
        if sample.class_name is not None:
            counts[f"class:{sample.class_name}"] += 1
        counts[f"review:{sample.review.status}"] += 1
    return dict(sorted(counts.items()))

