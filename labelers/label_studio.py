"""Human review in Label Studio: push the doubtful auto-labels, pull the people's verdicts back.

The round trip, for keyword-spotting (audio) and detection (images, boxes, optional masks):
- `push_for_review`: find or create the project (labelling config generated from the ontology),
  connect the media (the dataset's folder as local-files storage; for a Label Studio on another
  machine, the S3 bucket the dataset lives in, or a copy in one), and import one task per routed
  sample with the auto-labels as predictions. The sample id rides in the task data, so pushing
  again only adds what is new; an existing project, and anything a person did in it, is never
  changed.
- `pull_reviews`: read the annotations back into a new dataset version with review state
  (accepted, corrected, rejected), who reviewed and when, and a report of auto-label quality.

Routing: a sample whose weakest label scores below `threshold` (or that the verifier doubts) goes to
people as "doubtful"; a seeded random `qc_share` of the confident ones goes as "quality_check", and the
same share of the samples with no labels at all as "nothing_found" (people look there for what the
teacher missed); the rest are accepted automatically.
Label Studio's JSON (result regions to and from Labels) is spoken in edgedistill/formats/label_studio.py;
the dataset never sees it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, get_args

from edgedistill.boxes import label_iou
from edgedistill.dataset import Dataset, Label, LabelSource, Review, Sample, VersionInfo
from edgedistill.errors import EdgedistillError
from edgedistill.formats.label_studio import (AUDIO, BOX, IMAGE, KEYWORD, MASK, REJECT, TRANSCRIPT, VERDICT,
                                              label_results, latest_annotation, results_to_labels)
from edgedistill.masks import decode_rle
from edgedistill.recipe import ReviewSettings
from edgedistill.secrets import secret

Route = Literal["doubtful", "nothing_found", "quality_check", "auto"]

REVIEW_STAGE = "review"
HUMAN = LabelSource(labeler="label-studio", model="human review")
AUTO_REVIEWER = "edgedistill:auto-accept"  # who accepted the confident labels nobody looked at
SECRET_BLOCK = "label-studio-api-key"  # Prefect Secret block tried when the environment has no token


# -- connection ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Connection:
    url: str
    token: str = field(repr=False)  # never printed: repr and logs show the URL only


def connection_from_env(secret_block: str = SECRET_BLOCK) -> Connection:
    """URL and token from LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY, else the token from a Prefect Secret."""
    url = os.environ.get("LABEL_STUDIO_URL", "").rstrip("/")
    token = secret("LABEL_STUDIO_API_KEY", secret_block)
    if not url or not token:
        raise EdgedistillError(
            "no Label Studio connection: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are not both set",
            f"export both (or store the token in a Prefect Secret block named '{secret_block}'); "
            "`edgedistill review serve` starts a local Label Studio and prints them")
    return Connection(url=url, token=token)


def connect(connection: Connection):
    """A logged-in SDK client; a clear error when the server is down or the token is refused."""
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=connection.url, api_key=connection.token, timeout=60)
    _call(connection, "check the token", client.users.whoami)
    return client


def _call(connection: Connection, action: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one SDK call; turn network and HTTP failures into errors that say what to do."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        return function(*args, **kwargs)
    except httpx.TransportError as error:
        raise EdgedistillError(f"cannot reach Label Studio at {connection.url} to {action}: {type(error).__name__}",
                               "start it (`edgedistill review serve`) or fix LABEL_STUDIO_URL") from None
    except ApiError as error:
        if error.status_code == 403 and "reserved network address" in str(error.body):
            raise EdgedistillError(f"Label Studio refused to {action}: the store is on a private network address, "
                                   "which its SSRF protection blocks",
                                   "start Label Studio with USE_DEFAULT_BANNED_SUBNETS=false to let it reach a store on "
                                   "your own network (MinIO), or use a public endpoint") from None
        if error.status_code in (401, 403):
            raise EdgedistillError(f"Label Studio at {connection.url} refused the token ({error.status_code})",
                                   "set LABEL_STUDIO_API_KEY to the access token shown under Account & Settings "
                                   "(a legacy token needs legacy tokens enabled in Organization settings)") from None
        raise EdgedistillError(f"Label Studio could not {action}: HTTP {error.status_code} {str(error.body)[:300]}",
                               "check the project in the Label Studio UI; nothing in the dataset was changed") from None


# -- labelling config ----------------------------------------------------------------------------
def _xml_attr(value: str) -> str:
    from xml.sax.saxutils import quoteattr

    return quoteattr(value)


def has_masks(samples: Iterable[Sample]) -> bool:
    return any(label.mask is not None for sample in samples for label in sample.labels)


def label_config(dataset: Dataset, masks: bool = False) -> str:
    """The Label Studio labelling config generated from the dataset's ontology."""
    classes = [c.name for c in dataset.info.ontology]
    if dataset.info.task == "detection":
        labels = "".join(f"<Label value={_xml_attr(c)}/>" for c in classes)
        brush = f'<BrushLabels name="{MASK}" toName="{IMAGE}">{labels}</BrushLabels>' if masks else ""
        return (f'<View><Image name="{IMAGE}" value="$image" zoom="true"/>'
                f'<RectangleLabels name="{BOX}" toName="{IMAGE}">{labels}</RectangleLabels>{brush}'
                f'{_verdict_control(IMAGE)}</View>')
    if dataset.info.task == "keyword_spotting":
        choices = "".join(f"<Choice value={_xml_attr(c)}/>" for c in classes)
        return (f'<View><Audio name="{AUDIO}" value="$audio"/>'
                f'<Header value="Which keyword is said?"/>'
                f'<Choices name="{KEYWORD}" toName="{AUDIO}" choice="single-radio" showInline="true">{choices}</Choices>'
                f'<Header value="What is said (transcript)"/>'
                f'<TextArea name="{TRANSCRIPT}" toName="{AUDIO}" editable="true" maxSubmissions="1" rows="1"/>'
                f'{_verdict_control(AUDIO)}</View>')
    raise EdgedistillError(f"review supports detection and keyword_spotting datasets, not {dataset.info.task}",
                           "review this dataset with a custom Label Studio project")


def _verdict_control(to_name: str) -> str:
    # a sample that is unusable (broken audio, wrong image) is rejected as a whole, not relabelled
    return (f'<Header value="Unusable sample?"/><Choices name="{VERDICT}" toName="{to_name}" choice="single">'
            f'<Choice value="{REJECT}"/></Choices>')


def required_controls(dataset: Dataset, masks: bool) -> dict[str, tuple[str, set[str]]]:
    """Control name -> (tag type, labels) that pushing and pulling rely on."""
    classes = {c.name for c in dataset.info.ontology}
    if dataset.info.task == "detection":
        controls = {BOX: ("RectangleLabels", classes)}
        if masks:
            controls[MASK] = ("BrushLabels", classes)
    else:
        controls = {KEYWORD: ("Choices", classes), TRANSCRIPT: ("TextArea", set())}
    return controls | {VERDICT: ("Choices", {REJECT})}


def config_problems(parsed: dict[str, Any], required: dict[str, tuple[str, set[str]]]) -> list[str]:
    """What an edited project's config lacks for the round trip (empty when it still fits)."""
    problems = []
    for name, (kind, labels) in required.items():
        control = parsed.get(name)
        if control is None or control.get("type") != kind:
            problems.append(f"control {kind} '{name}' is missing")
            continue
        missing = labels - set(control.get("labels") or [])
        if missing:
            problems.append(f"'{name}' lacks the labels {sorted(missing)}")
    return problems


# -- routing -------------------------------------------------------------------------------------
def confidence(sample: Sample) -> float | None:
    """The weakest label's score; a label without a score counts as sure; None without labels."""
    return min((1.0 if label.score is None else label.score for label in sample.labels), default=None)


def _draw(seed: int, sample_id: str) -> float:
    """A stable uniform number per sample, so a sample's quality-control draw never changes."""
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def route(sample: Sample, settings: ReviewSettings) -> Route:
    if sample.review.status != "auto":
        return "auto"  # people already decided; never ask again
    sampled = _draw(settings.seed, sample.id) < settings.qc_share
    if not sample.labels:  # the teacher found nothing: not doubtful, but worth a sampled look for misses
        return "nothing_found" if sampled else "auto"
    if confidence(sample) < settings.threshold or any(label.doubted for label in sample.labels):
        return "doubtful"
    return "quality_check" if sampled else "auto"


# -- tasks -------------------------------------------------------------------------------------
def model_version(sample: Sample) -> str:
    sources = sorted({"/".join(filter(None, (label.source.labeler, label.source.model, label.source.version)))
                      for label in sample.labels})
    return ", ".join(sources) or "none"


def make_task(dataset: Dataset, sample: Sample, version: VersionInfo, why: Route, media: str) -> dict:
    media_key = IMAGE if dataset.info.task == "detection" else AUDIO
    score = confidence(sample)
    data = {media_key: media, "sample_id": sample.id, "dataset": dataset.info.name,
            "version": version.id, "route": why, "confidence": None if score is None else round(score, 4)}
    verdicts = [f"{label.class_name}: {label.verdict.outcome}"
                f"{f' (was {label.verdict.was})' if label.verdict.was else ''}: {label.verdict.reason}"
                for label in sample.labels if label.doubted]
    if verdicts:  # why the verifier doubts the sample, beside it in the data manager
        data["verifier"] = "; ".join(verdicts)
    prediction = {"model_version": model_version(sample), "score": score,
                  "result": label_results(sample, dataset.info.task)}
    return {"data": data, "predictions": [prediction]}


def task_batches(dataset: Dataset, version: VersionInfo, samples: list[Sample], routes: dict[str, Route],
                 store: LocalFiles | S3Media, size: int = 500) -> Iterator[list[dict]]:
    """The samples' tasks, `size` at a time (one import request each), so that no more are ever held."""
    for start in range(0, len(samples), size):
        yield [make_task(dataset, s, version, routes[s.id], store.url(dataset, s)) for s in samples[start:start + size]]


# -- push ----------------------------------------------------------------------------------------
@dataclass
class PushResult:
    project_id: int
    project_url: str
    created_project: bool
    imported: int  # new tasks this push
    already_there: int  # routed samples whose task existed (not touched)
    routes: dict[str, int]  # route (doubtful / nothing_found / quality_check / auto) -> samples
    config_edited: bool  # the project's config differs from ours but still fits


def project_title(dataset: Dataset, settings: ReviewSettings) -> str:
    return settings.project or f"edgedistill: {dataset.info.name}"


def description(dataset: Dataset) -> str:
    """A project's description names the dataset it reviews by its location: projects are found by it,
    so that a copy of a dataset in another folder (same name, same sample ids) is another dataset."""
    return f"Auto-labels of {dataset.location} to review (made by edgedistill)"


def reviewed_location(project) -> str | None:
    """The location of the dataset a project reviews, read from its description (kept when people add to it)."""
    found = re.search(r"Auto-labels of (.+?) to review", project.description or "")
    return found.group(1) if found else None


def own_title(dataset: Dataset, title: str) -> str:
    """The title of this dataset's project when another dataset's project has `title` already."""
    return f"{title} ({hashlib.sha256(dataset.location.encode()).hexdigest()[:6]})"


def projects_titled(client, connection: Connection, title: str) -> list[Any]:
    """The projects whose title is `title`, or `title` with a dataset's own suffix (`own_title`)."""
    listed = _call(connection, "list projects", lambda: list(client.projects.list(title=title)))
    return [p for p in listed if p.title == title or p.title.startswith(f"{title} (")]


def find_project(projects: list[Any], dataset: Dataset, title: str) -> Any | None:
    ours = [p for p in projects if p.title in (title, own_title(dataset, title))
            and reviewed_location(p) == dataset.location]
    return min(ours, key=lambda p: p.id, default=None)  # the oldest: the one people worked in


def existing_tasks(client, connection: Connection, project_id: int) -> dict[str, Any]:
    """sample id -> task, for every task in the project (with its annotations)."""
    tasks = _call(connection, "list tasks", lambda: list(client.tasks.list(project=project_id, fields="all",
                                                                              page_size=500)))
    return {str(task.data.get("sample_id")): task for task in tasks if task.data.get("sample_id")}


def push_for_review(dataset: Dataset, connection: Connection, settings: ReviewSettings,
                    version_id: str | None = None) -> PushResult:
    """Send the routed samples of a version to Label Studio; safe to run again at any time."""
    version = dataset.version(version_id)
    samples = dataset.samples(version.id)
    store = media_store(settings, dataset)
    masks = has_masks(samples)
    client = connect(connection)
    project, created = _project_for(dataset, client, connection, settings, masks)
    config_edited = False
    if not created:
        problems = config_problems(project.parsed_label_config or {}, required_controls(dataset, masks))
        if problems:
            raise _config_error(project, problems)
        config_edited = project.label_config != label_config(dataset, masks)
    routes = {sample.id: route(sample, settings) for sample in samples}
    present = existing_tasks(client, connection, project.id)
    pending = [s for s in samples if routes[s.id] != "auto" and s.id not in present]
    store.connect(dataset, client, connection, project.id, pending)
    for batch in task_batches(dataset, version, pending, routes, store):
        _call(connection, "import tasks", client.projects.import_tasks, project.id, request=batch,
              return_task_ids=True)
    counts = {name: sum(1 for r in routes.values() if r == name) for name in get_args(Route)}
    return PushResult(project_id=project.id, project_url=f"{connection.url}/projects/{project.id}",
                      created_project=created, imported=len(pending),
                      already_there=sum(1 for s in samples if routes[s.id] != "auto" and s.id in present),
                      routes=counts, config_edited=config_edited)


def _project_for(dataset: Dataset, client, connection: Connection, settings: ReviewSettings,
                 masks: bool) -> tuple[Any, bool]:
    title = project_title(dataset, settings)
    projects = projects_titled(client, connection, title)
    project = find_project(projects, dataset, title)
    if project is not None:
        return project, False
    if any(p.title == title for p in projects):  # another dataset's: a copy of this one elsewhere, or a namesake
        title = own_title(dataset, title)
    _call(connection, "create the project", client.projects.create, title=title, label_config=label_config(dataset, masks),
          description=description(dataset), show_collab_predictions=True)
    return find_project(projects_titled(client, connection, title), dataset, title), True


def _config_error(project, problems: list[str]) -> EdgedistillError:
    return EdgedistillError(
        f"the labelling config of Label Studio project '{project.title}' (id {project.id}) was changed: "
        + "; ".join(problems),
        "restore those controls under Settings > Labeling Interface, or push to a new project "
        "(--project NAME); edgedistill never overwrites a project people edited")


# -- where Label Studio reads the media -----------------------------------------------------------
class LocalFiles:
    """The dataset's media folder as local-files storage, for a Label Studio that sees this disk."""

    def __init__(self, settings: ReviewSettings) -> None:
        root = settings.document_root or os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
        if not root:
            raise EdgedistillError("Label Studio's local-files document root is unknown",
                                   "set LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (the same value the server runs with) "
                                   "or `document_root` in the recipe's review section; or give `media_store` "
                                   "an s3:// URL for a Label Studio elsewhere")
        self.document_root = Path(root).resolve()

    def url(self, dataset: Dataset, sample: Sample) -> str:
        from urllib.parse import quote

        try:
            relative = dataset.media_path(sample).resolve().relative_to(self.document_root)
        except ValueError:
            raise EdgedistillError(f"the media of {dataset.location} lie outside Label Studio's document root "
                                   f"{self.document_root}",
                                   "start Label Studio with LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to a folder "
                                   "above the dataset, and set the same value here") from None
        return f"/data/local-files/?d={quote(str(relative))}"

    def connect(self, dataset: Dataset, client, connection: Connection, project_id: int,
                samples: list[Sample]) -> None:
        """Label Studio serves a local file only under a local-files storage that holds it."""
        media = dataset.store.path("media")
        storages = _call(connection, "list storages", client.import_storage.local.list, project=project_id)
        if not any(getattr(s, "path", None) == media for s in storages):
            _call(connection, "connect the media folder", client.import_storage.local.create, project=project_id,
                  path=media, title=f"{dataset.info.name} media", use_blob_urls=False)


class S3Media:
    """Media in an S3 bucket (AWS, or MinIO and the like), connected as S3 storage: Label Studio anywhere
    reads them through presigned URLs. Either the dataset lives in that bucket already, or push copies
    the pushed media there (`review.media_store`). Credentials come from the environment
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) for both the copy and Label Studio's connection; without
    them Label Studio uses its own."""

    def __init__(self, url: str, endpoint: str | None, copy: bool) -> None:
        from urllib.parse import urlparse

        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise EdgedistillError(f"review.media_store {url!r} is not an s3:// URL",
                                   "give s3://BUCKET/PREFIX (Label Studio's S3 storage; set media_store_endpoint "
                                   "for MinIO or another S3-compatible store)")
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        self.endpoint = endpoint
        self.copy = copy

    def key(self, sample: Sample) -> str:
        return f"{self.prefix}/{sample.media}" if self.prefix else sample.media

    def url(self, dataset: Dataset, sample: Sample) -> str:
        return f"s3://{self.bucket}/{self.key(sample)}"

    def connect(self, dataset: Dataset, client, connection: Connection, project_id: int,
                samples: list[Sample]) -> None:
        if self.copy:
            self._upload(dataset, samples)
        storages = _call(connection, "list S3 storages", client.import_storage.s3.list, project=project_id)
        if not any((s.bucket, s.prefix or "", s.s3endpoint or None) == (self.bucket, self.prefix, self.endpoint)
                   for s in storages):
            _call(connection, f"connect the bucket {self.bucket}", client.import_storage.s3.create,
                  project=project_id, bucket=self.bucket, prefix=self.prefix, s3endpoint=self.endpoint,
                  aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
                  aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
                  region_name=os.environ.get("AWS_DEFAULT_REGION"), presign=True, use_blob_urls=True,
                  title=f"{dataset.info.name} media")

    def _upload(self, dataset: Dataset, samples: list[Sample]) -> None:
        """Copy the media the store lacks (content-addressed, so an existing key is the same file)."""
        import fsspec

        where = f"s3://{self.bucket}/{self.prefix}"
        try:
            # a new client each push, so that changed credentials in the environment count
            fs = fsspec.filesystem("s3", skip_instance_cache=True,
                                   **({"endpoint_url": self.endpoint} if self.endpoint else {}))
            by_key = {f"{self.bucket}/{self.key(s)}": s for s in samples}
            missing = sorted(set(by_key) - set(fs.find(f"{self.bucket}/{self.prefix}"))) if by_key else []
            if missing:  # a remote dataset fetches only these
                local = dataset.media_paths([by_key[key] for key in missing])
                fs.put([str(path) for path in local], missing)
        except ImportError as error:
            raise EdgedistillError(f"copying media to {where} needs {error.name}",
                                   "install the review extra: pip install 'edgedistill[review]'") from None
        except Exception as error:  # s3fs raises OSErrors, botocore its own (no credentials, bad endpoint)
            raise EdgedistillError(f"cannot copy the media to {where}: {type(error).__name__}: {error}",
                                   "check the bucket exists, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and "
                                   "review.media_store_endpoint; nothing was pushed") from None


def media_store(settings: ReviewSettings, dataset: Dataset) -> LocalFiles | S3Media:
    """Where Label Studio reads the media: the bucket the dataset lives in, a bucket that push copies
    them to (`review.media_store`), or this disk (local-files storage)."""
    # the endpoint Label Studio is told; the environment's is the one edgedistill itself uses
    endpoint = settings.media_store_endpoint or os.environ.get("AWS_ENDPOINT_URL")
    if settings.media_store:
        return S3Media(settings.media_store, endpoint, copy=True)
    if dataset.store.is_local:
        return LocalFiles(settings)
    if dataset.location.startswith("s3://"):
        return S3Media(dataset.location, endpoint, copy=False)
    raise EdgedistillError(f"Label Studio cannot read the media of {dataset.location} where they are",
                           "set review.media_store to an s3:// bucket that push copies them to")


# -- pull ----------------------------------------------------------------------------------------
@dataclass
class Verdict:
    """What one reviewer said about one sample."""

    status: Literal["accepted", "corrected", "rejected"]
    labels: list[Label]  # the labels to keep
    reviewed: list[Label]  # what the reviewer's annotation holds (for the quality report)
    reviewer: str
    at: datetime


@dataclass
class PullResult:
    version: VersionInfo
    counts: dict[str, int]  # accepted / corrected / rejected / auto_accepted / pending / missing_task
    report: dict[str, Any]
    missing: list[str] = field(default_factory=list)  # routed samples whose task is gone (re-push)


def same_labels(auto: list[Label], reviewed: list[Label], tolerance_px: float) -> bool:
    """Whether the reviewer left the auto-labels as they were (within rounding of the UI)."""
    if sorted(l.class_name for l in auto) != sorted(l.class_name for l in reviewed):
        return False
    unmatched = list(reviewed)
    for label in auto:
        match = next((r for r in unmatched if r.class_name == label.class_name and _same_geometry(label, r, tolerance_px)
                      and (r.transcript is None or (r.transcript or "").strip() == (label.transcript or "").strip())),
                     None)
        if match is None:
            return False
        unmatched.remove(match)
    return True


def _same_geometry(a: Label, b: Label, tolerance_px: float) -> bool:
    if (a.box is None) != (b.box is None):
        return False
    if a.box is not None and max(abs(p - q) for p, q in zip(a.box, b.box)) > tolerance_px:
        return False
    if a.mask is not None and b.mask is not None:
        ma, mb = decode_rle(a.mask), decode_rle(b.mask)
        return float((ma & mb).sum()) / max(1.0, float((ma | mb).sum())) >= 0.95
    return (a.mask is None) == (b.mask is None) or b.mask is None


def verdict_of(annotation: dict, sample: Sample, task: str, reviewers: dict[int, str],
               settings: ReviewSettings) -> Verdict:
    reviewed, rejected = results_to_labels(annotation.get("result") or [], sample, task, HUMAN)
    if task == "keyword_spotting" and not reviewed:
        reviewed = sample.labels  # every clip has one class: a submit without a choice leaves it as it was
    reviewer = reviewers.get(annotation.get("completed_by"), f"user {annotation.get('completed_by')}")
    at = datetime.fromisoformat(annotation.get("updated_at") or annotation["created_at"])
    if rejected:
        return Verdict("rejected", sample.labels, reviewed, reviewer, at)  # the data stays; training drops it
    if same_labels(sample.labels, reviewed, settings.box_tolerance_px):
        return Verdict("accepted", sample.labels, reviewed, reviewer, at)
    return Verdict("corrected", reviewed, reviewed, reviewer, at)


def check_ontology(verdicts: dict[str, Verdict], dataset: Dataset) -> None:
    """Refuse labels outside the ontology before anything is written (a config edited by hand)."""
    known = {c.name for c in dataset.info.ontology}
    strange = sorted({l.class_name for v in verdicts.values() for l in v.labels} - known)
    if strange:
        raise EdgedistillError(f"reviewers used classes that are not in the ontology of {dataset.info.name}: {strange}",
                               "relabel those tasks with known classes in Label Studio, or add the classes to "
                               "the recipe and rebuild the dataset; nothing was written")


def pull_reviews(dataset: Dataset, connection: Connection, settings: ReviewSettings,
                 version_id: str | None = None) -> PullResult:
    """Read reviews into a new version made from `version_id` (default: newest version not made by a pull)."""
    parent = _pull_parent(dataset, version_id)
    samples = dataset.samples(parent.id)
    client = connect(connection)
    project = pushed_project(dataset, client, connection, settings, has_masks(samples))
    tasks = existing_tasks(client, connection, project.id)
    users = _call(connection, "list users", lambda: list(client.users.list()))
    reviewers = {u.id: u.email or u.username or f"user {u.id}" for u in users}
    annotations = {sid: a for sid, task in tasks.items()
                   if (a := latest_annotation(task.annotations or [])) is not None}
    by_id = {s.id: s for s in samples}
    verdicts = {sid: verdict_of(a, by_id[sid], dataset.info.task, reviewers, settings)
                for sid, a in annotations.items() if sid in by_id}
    check_ontology(verdicts, dataset)
    routes = {s.id: route(s, settings) for s in samples}
    missing = sorted(sid for sid, r in routes.items() if r != "auto" and sid not in tasks)
    params = {"project": project.id, "threshold": settings.threshold, "qc_share": settings.qc_share,
              "seed": settings.seed, "reviews": _fingerprint(annotations), "missing": missing}
    report: dict[str, Any] = {}

    def make(parent_samples: list[Sample], _work: Path) -> tuple[list[Sample], dict]:
        updated = [apply_review(s, verdicts.get(s.id), routes[s.id]) for s in parent_samples]
        report.update(quality_report(parent_samples, verdicts, routes, missing))
        return updated, report

    version = dataset.derive(parent, REVIEW_STAGE, params, make)
    stored = dataset.report(version) or report  # a pull that found nothing new returns the earlier report
    return PullResult(version=version, counts=stored.get("counts", {}), report=stored, missing=missing)


def pushed_project(dataset: Dataset, client, connection: Connection, settings: ReviewSettings, masks: bool) -> Any:
    """The dataset's project, checked to still hold the controls the round trip reads."""
    title = project_title(dataset, settings)
    projects = projects_titled(client, connection, title)
    project = find_project(projects, dataset, title)
    if project is None:
        others = [f"'{p.title}' (id {p.id}) reviews {reviewed_location(p) or 'a dataset edgedistill did not push'}"
                  for p in projects]
        raise EdgedistillError(
            f"{dataset.location} was never pushed to Label Studio: it has no project '{title}' for it"
            + (f"; {'; '.join(others)}" if others else ""),
            "run `edgedistill review push` for this dataset first"
            + ("; if it is that dataset moved here, edit the project's description in Label Studio to say "
               f"'{description(dataset)}'" if others else ""))
    problems = config_problems(project.parsed_label_config or {}, required_controls(dataset, masks))
    if problems:
        raise _config_error(project, problems)
    return project


def _pull_parent(dataset: Dataset, version_id: str | None) -> VersionInfo:
    if version_id is not None:
        return dataset.version(version_id)
    for version in reversed(dataset.info.versions):
        if version.stage != REVIEW_STAGE:
            return version  # pulls always start from the reviewed data, so a later pull supersedes
    return dataset.version()


def _fingerprint(annotations: dict[str, dict]) -> str:
    """Identity of the review state: a new pull makes a new version only when people did something."""
    state = sorted((sid, a["id"], a.get("updated_at")) for sid, a in annotations.items())
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]


def apply_review(sample: Sample, verdict: Verdict | None, why: Route) -> Sample:
    if verdict is not None:
        return sample.model_copy(update={
            "labels": verdict.labels,
            "review": Review(status=verdict.status, reviewer=verdict.reviewer, at=verdict.at)})
    if why == "auto" and sample.review.status == "auto":
        return sample.model_copy(update={"review": Review(status="accepted", reviewer=AUTO_REVIEWER)})
    return sample  # waiting for people (or its task was deleted): keep it as it was


# -- the quality report --------------------------------------------------------------------------
def quality_report(samples: list[Sample], verdicts: dict[str, Verdict], routes: dict[str, Route],
                   missing: list[str]) -> dict[str, Any]:
    """Per class: how the auto-labels fared, and their precision/recall against the reviewed labels."""
    per_class: dict[str, dict[str, float | int | None]] = {}

    def row(name: str) -> dict:
        return per_class.setdefault(name, {"accepted": 0, "corrected": 0, "rejected": 0, "auto_accepted": 0,
                                           "pending": 0, "true_positives": 0, "auto_labels": 0, "reviewed_labels": 0})

    counts = {"accepted": 0, "corrected": 0, "rejected": 0, "auto_accepted": 0, "pending": 0,
              "missing_task": len(missing)}
    for sample in samples:
        verdict = verdicts.get(sample.id)
        outcome = verdict.status if verdict else ("auto_accepted" if routes[sample.id] == "auto" else "pending")
        counts[outcome] += 1
        for label in sample.labels:
            row(label.class_name)[outcome] += 1
        if verdict is None or verdict.status == "rejected":
            continue  # precision and recall only where a person gave the truth
        for name, matched in _matches(sample.labels, verdict.reviewed).items():
            row(name)["true_positives"] += matched
        for label in sample.labels:
            row(label.class_name)["auto_labels"] += 1
        for label in verdict.reviewed:
            row(label.class_name)["reviewed_labels"] += 1
    for figures in per_class.values():
        tp = figures["true_positives"]
        figures["precision"] = tp / figures["auto_labels"] if figures["auto_labels"] else None
        figures["recall"] = tp / figures["reviewed_labels"] if figures["reviewed_labels"] else None
    return {"counts": counts, "per_class": dict(sorted(per_class.items())), "missing_tasks": missing}


def _matches(auto: list[Label], reviewed: list[Label], min_iou: float = 0.5) -> dict[str, int]:
    """Per class, how many auto-labels match a reviewed one (same class, boxes overlapping by min_iou)."""
    found: dict[str, int] = {}
    left = list(reviewed)
    for label in sorted(auto, key=lambda l: -(l.score or 0.0)):
        best = max((r for r in left if r.class_name == label.class_name), key=lambda r: label_iou(label.box, r.box),
                   default=None)
        if best is not None and label_iou(label.box, best.box) >= min_iou:
            left.remove(best)
            found[label.class_name] = found.get(label.class_name, 0) + 1
    return found


def report_table(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows for a printed table: class, accepted, corrected, rejected, auto, precision, recall."""
    rows = []
    for name, f in report["per_class"].items():
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        rows.append((name, str(f["accepted"]), str(f["corrected"]), str(f["rejected"]), str(f["auto_accepted"]),
                     str(f["pending"]), fmt(f["precision"]), fmt(f["recall"])))
    return rows


# -- waiting for people --------------------------------------------------------------------------
@dataclass
class ReviewProgress:
    total: int  # tasks in the project
    done: int  # tasks with a finished annotation

    @property
    def finished(self) -> bool:
        return self.done >= self.total


def review_progress(dataset: Dataset, connection: Connection, settings: ReviewSettings) -> ReviewProgress:
    client = connect(connection)
    project = pushed_project(dataset, client, connection, settings, masks=False)
    tasks = existing_tasks(client, connection, project.id)
    done = sum(1 for task in tasks.values() if latest_annotation(task.annotations or []) is not None)
    return ReviewProgress(total=len(tasks), done=done)
