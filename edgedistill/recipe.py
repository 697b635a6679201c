"""Recipes: the YAML a data team writes. Every field has a default; unknown fields are errors."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator,
                      model_serializer, model_validator)

from edgedistill.errors import EdgedistillError, describe_validation_error

UNKNOWN = "_unknown_"
SILENCE = "_silence_"


def is_keyword(label: str) -> bool:
    """A keyword, not one of the two negative classes."""
    return label not in (UNKNOWN, SILENCE)


OPENAI_VOICES = ("alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage",
                 "shimmer", "verse")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # `.inf` or `.nan` is no setting


class ApiSettings(_Section):
    """An OpenAI-compatible API: OpenAI itself, or a local vLLM, Ollama or LiteLLM proxy at `base_url`.
    The key comes from the environment variable `api_key_env`, else the Prefect Secret block
    `secret_block`; never from a recipe."""

    model: str
    base_url: str | None = None  # None: OpenAI's; e.g. http://localhost:11434/v1 for Ollama
    api_key_env: str = "OPENAI_API_KEY"
    secret_block: str = "openai-api-key"
    max_requests: int | None = Field(None, ge=0)  # per run (answers cached earlier are free); None: no limit
    max_cost: float | None = Field(None, ge=0)  # USD per run, at the model's prices; None: no limit
    concurrency: int = Field(4, ge=1)  # requests in flight in each worker
    timeout: float = Field(60.0, gt=0)  # seconds for one request
    retries: int = Field(4, ge=0)  # on 429, 5xx and timeouts, with backoff that honours retry-after
    # USD per million input and output units of the model's price list (tokens for chat models, characters of
    # text in for speech models, images made for image models); None: the list price of a known OpenAI model
    price_input: float | None = Field(None, ge=0)
    price_output: float | None = Field(None, ge=0)

    def deciding(self) -> dict:
        """The fields that decide the answers, for a stage key: not how they are fetched."""
        return self.model_dump(mode="json", exclude={"concurrency", "timeout", "retries", "api_key_env",
                                                     "secret_block"})


class SpeechApiSettings(ApiSettings):
    """The API speech engine (`openai` among speech.engines): an OpenAI-compatible `/audio/speech`
    (OpenAI retires its speech models in January 2027; local servers such as Kokoro-FastAPI speak it too)."""

    model: str = "gpt-4o-mini-tts"
    voices: list[str] = Field(default_factory=lambda: list(OPENAI_VOICES))


class SpeechSettings(_Section):
    engines: list[str] | None = None  # None: every engine this machine has
    voices_per_engine: int | None = None  # None: all of them
    variants_per_voice: int = Field(6, ge=1)  # prosody variations of each keyword per voice
    carrier_phrases: bool = True
    unknown_words: list[str] | None = None  # the `_unknown_` words; None: everyday words and sound-alikes
    unknown_vocabulary: int = Field(3000, ge=1)  # how many of the most frequent English words to draw from
    # of the unknown clips, the shares that say a keyword's sound-alike, a keyword's first or last part, and a
    # window of running speech; everyday words make up the rest
    confusable_share: float = Field(0.4, ge=0, le=1)
    partial_share: float = Field(0.1, ge=0, le=1)
    phrase_share: float = Field(0.2, ge=0, le=1)
    # unknown clips, relative to one keyword's; 4 rejected 60% of real other words against 50% for 1 (digits)
    unknown_share: float = Field(4.0, ge=0)
    silence_share: float = Field(1.0, ge=0)
    workers: int | None = None  # processes; None: one per core
    api: SpeechApiSettings = Field(default_factory=SpeechApiSettings)  # the `openai` engine

    @model_serializer(mode="wrap")
    def _api_when_set(self, handler):
        # settings made before the API engine existed keep their stage keys (and their versions)
        data = handler(self)
        if self.api == SpeechApiSettings():
            data.pop("api", None)
        return data

    @model_validator(mode="after")
    def _negative_shares_fit(self) -> "SpeechSettings":
        total = self.confusable_share + self.partial_share + self.phrase_share
        if total > 1 + 1e-9:
            raise ValueError(f"confusable_share + partial_share + phrase_share is {total:g}; at most 1 (the rest are "
                             "everyday words)")
        return self


class AugmentSettings(_Section):
    copies: int = Field(2, ge=0)  # augmented copies of each clean clip
    snr_db: tuple[float, float] = (3.0, 30.0)
    reverb_probability: float = Field(0.4, ge=0, le=1)
    channel_probability: float = Field(0.3, ge=0, le=1)  # telephone band / low sample rate
    max_shift_seconds: float = Field(0.1, ge=0)
    speed_range: tuple[float, float] = (0.9, 1.1)
    vocal_tract_probability: float = Field(0.5, ge=0, le=1)  # formants moved as by a longer or shorter vocal tract
    vocal_tract_range: tuple[float, float] = (0.85, 1.15)  # frequency-axis stretch factors
    # of the noisy copies that get no babble, the share mixed with a real recording (water, traffic, music...)
    real_noise_share: float = Field(0.5, ge=0, le=1)
    noise_folders: list[str] | None = None  # folders of noise recordings; None: the packaged sources found here


class WhisperCheckSettings(_Section):
    enabled: bool = True
    model: str = "tiny.en"  # a local folder, a hub id, or the packaged tiny.en
    clips_per_voice: int = Field(2, ge=1)  # clips checked for each voice and keyword
    min_pass_share: float = Field(0.5, ge=0, le=1)  # voice/keyword kept if this share is heard right
    # "packed": up to 20 clips per 30 s Whisper window (10x faster, and context helps tiny.en hear
    # isolated words); "single": one clip per window, slower and stricter
    windowing: Literal["packed", "single"] = "packed"


class MiningSettings(_Section):
    """Keyword clips cut from the team's own long recordings (`recordings:`) where Whisper hears the words."""

    model: str = "tiny.en"  # a local CTranslate2 folder, a hub id, or the packaged tiny.en
    # every keyword Whisper hears becomes a clip; of other words and of pauses, at most this many clips per
    # minute of recording (an hour of talk holds thousands of words, and negatives are cheap to synthesise)
    unknown_per_minute: float = Field(6.0, ge=0)
    silence_per_minute: float = Field(2.0, ge=0)
    window_minutes: float = Field(10.0, gt=0)  # one resumable shard: this much of one recording, read alone


class ReviewSettings(_Section):
    """Human review in Label Studio (`edgedistill review push|pull`, and the flow when enabled)."""

    enabled: bool = False  # the flow pauses for people between labelling and training
    threshold: float = Field(0.5, ge=0, le=1)  # samples with a label scoring below this go to people
    qc_share: float = Field(0.05, ge=0, le=1)  # share of confident samples sent too, to measure quality
    seed: int = 0
    project: str | None = None  # project title; default "edgedistill: <dataset name>"
    document_root: str | None = None  # the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (env default)
    # s3://BUCKET/PREFIX: push copies the media there and connects it as S3 storage, for a Label Studio that
    # cannot read this machine's disk; the endpoint is for MinIO and other S3-compatible stores
    media_store: str | None = None
    media_store_endpoint: str | None = None
    wait_hours: float = Field(24.0, gt=0)  # how long a flow waits for people before going on
    poll_seconds: float = Field(30.0, gt=0)
    box_tolerance_px: float = Field(1.0, ge=0)  # a reviewed box this close to the auto box is "accepted"


class TrainSettings(_Section):
    epochs: int = Field(25, ge=1)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    patience: int = Field(6, ge=1)
    width: int = Field(64, ge=8)  # DS-CNN channels
    # loss weight of the `_unknown_` class against one keyword; with vocal tract warping, 4 took real other
    # words rejected from 60% to 77% (digits), and keyword recognition from 80% to 72%
    unknown_weight: float = Field(4.0, gt=0)
    val_share: float = Field(0.15, gt=0, lt=1)  # share of voices held out for validation
    test_share: float = Field(0.2, gt=0, lt=1)  # share of voices held out for the final test
    seed: int = 0


class FrontEndSettings(_Section):
    frame_length: int = Field(512, ge=1)  # samples; the FFT length, a power of two for CMSIS-DSP
    hop_length: int = Field(320, ge=1)
    mel_filters: int = Field(40, ge=1)
    mfcc: int = Field(10, ge=1)
    f_min: float = 20.0
    f_max: float = 4000.0


class StreamingSettings(_Section):
    """How the device listens to a stream (`predict --stream`, the C header), and its operating point."""

    max_false_accepts_per_hour: float = Field(0.5, gt=0)  # over all keywords, on held-out negative audio
    stride_seconds: float = Field(0.1, gt=0)  # the model runs this often; a multiple of the front end's hop
    smoothing_windows: int = Field(3, ge=1)  # posteriors averaged before thresholding
    refractory_seconds: float = Field(1.0, ge=0)  # quiet time after a detection
    thresholds: dict[str, float] = Field(default_factory=dict)  # keyword -> fixed threshold, instead of calibrated

    @field_validator("thresholds")
    @classmethod
    def _thresholds_are_probabilities(cls, thresholds: dict[str, float]) -> dict[str, float]:
        for keyword, value in thresholds.items():
            if not 0 <= value <= 1:
                raise ValueError(f"the threshold of '{keyword}' is {value}; thresholds are posteriors, from 0 to 1")
        return thresholds


class EvaluateSettings(_Section):
    # real recordings to measure the exported model on (never trained on): a CSV of file,word[,speaker], a
    # folder holding labels.csv, or a folder of sub-folders named by word
    real: str | None = None


class DetectionEvaluateSettings(_Section):
    # real photos to measure the exported model (and its teacher) on, never trained on: a CSV of boxes, a COCO
    # JSON, a YOLO folder or a Label Studio export (edgedistill/real_photos.py)
    real: str | None = None
    # boxes smaller than this share of the photo's shorter side are not asked for (a detection there counts
    # neither way): a 96x96 input has 8-pixel cells, so faces under ~5% of the photo are beyond it
    min_share: float = Field(0.0, ge=0, lt=1)


class ExportSettings(_Section):
    formats: list[Literal["tflite", "onnx", "c_header", "vela"]] = ["tflite", "onnx", "c_header", "vela"]
    max_int8_accuracy_drop: float = Field(0.02, ge=0, le=1)  # measured: 0.1-0.3 points (digits, faces)
    calibration_samples: int = Field(300, ge=1)
    vela_accelerator: str = "ethos-u55-128"
    # which bundle becomes the run's `bundle/` (each one is kept in `bundles/<dataset version>/`): one as good
    # as the bundle there on the same held-out set, or always the newest
    promote: Literal["if_better", "always"] = "if_better"


class _Recipe(_Section):
    """What every recipe has besides its task's sections."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    # where the dataset lives: a folder or an fsspec URL (s3://bucket/faces); default <out>/dataset
    dataset: str | None = None
    # where every model runs (foundation models, our trainers, YOLO): cpu, cuda, cuda:1; default a GPU if any
    device: str | None = Field(None, pattern=r"^(cpu|cuda(:\d+)?|mps)$")
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)


class KeywordSpottingRecipe(_Recipe):
    task: Literal["keyword_spotting"]
    keywords: list[str]
    sample_rate: int = Field(16000, ge=8000)
    clip_seconds: float = Field(1.0, gt=0.2, le=3.0)
    speech: SpeechSettings = Field(default_factory=SpeechSettings)
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    whisper_check: WhisperCheckSettings = Field(default_factory=WhisperCheckSettings)
    # the team's own recordings (files or folders, local or s3://...): keyword clips mined from them join the
    # synthetic ones, split by recording
    recordings: list[str] = Field(default_factory=list)
    mining: MiningSettings = Field(default_factory=MiningSettings)
    frontend: FrontEndSettings = Field(default_factory=FrontEndSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    detect: StreamingSettings = Field(default_factory=StreamingSettings)
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)

    @field_validator("keywords")
    @classmethod
    def _keywords_are_distinct_words(cls, keywords: list[str]) -> list[str]:
        if not keywords:
            raise ValueError("list at least one keyword to spot")
        cleaned = [unicodedata.normalize("NFC", " ".join(k.split())) for k in keywords]
        if any(not k for k in cleaned):
            raise ValueError("a keyword is empty")
        seen: dict[str, str] = {}
        for keyword in cleaned:
            folded = keyword.casefold()
            if folded in seen:
                raise ValueError(f"'{keyword}' is listed twice (as '{seen[folded]}' too)")
            if keyword in (UNKNOWN, SILENCE):
                raise ValueError(f"'{keyword}' is reserved for the negative classes")
            seen[folded] = keyword
        return cleaned

    @model_validator(mode="after")
    def _streaming_fits_the_front_end(self) -> "KeywordSpottingRecipe":
        hop_seconds = self.frontend.hop_length / self.sample_rate
        frames = self.detect.stride_seconds / hop_seconds
        if abs(frames - round(frames)) > 1e-6 or round(frames) < 1:
            raise ValueError(f"detect.stride_seconds ({self.detect.stride_seconds}) must be a whole number of front-end "
                             f"hops ({hop_seconds:g} s each), e.g. {5 * hop_seconds:g}")
        unknown = sorted(set(self.detect.thresholds) - set(self.keywords))
        if unknown:
            raise ValueError(f"detect.thresholds names {unknown}, which are not keywords; thresholds are per keyword")
        return self

    @property
    def classes(self) -> list[str]:
        """Model output order: the keywords, then the two negative classes."""
        return [*self.keywords, UNKNOWN, SILENCE]


# -- detection --------------------------------------------------------------------------------
class DetectionClass(_Section):
    """One class of the ontology: the prompts that mean it, and those that must not."""

    prompts: list[str]
    negative_prompts: list[str] = Field(default_factory=list)
    threshold: float | None = Field(None, ge=0, le=1)  # None: the labeler's threshold


class CompositingSettings(_Section):
    enabled: bool = True
    cutouts: str | None = None  # folder of object images with alpha, in sub-folders named by class
    backgrounds: str | None = None  # folder of background photos; None: unlabelled photos and generated ones
    images: int = Field(300, ge=0)  # composites to make
    objects_per_image: tuple[int, int] = (1, 4)
    distractors_per_image: tuple[int, int] = (0, 2)  # unlabelled pastes of scene patches in object shapes
    scale: tuple[float, float] = (0.15, 0.5)  # object size relative to the image's shorter side
    max_rotation: float = Field(20.0, ge=0, le=180)
    occlusion_probability: float = Field(0.2, ge=0, le=1)
    blending: list[Literal["none", "gaussian", "poisson"]] = ["gaussian", "poisson"]
    image_size: tuple[int, int] = (320, 320)  # width, height

    @field_validator("objects_per_image", "distractors_per_image", "scale")
    @classmethod
    def _low_high(cls, bounds: tuple, info: ValidationInfo) -> tuple:
        if not 0 <= bounds[0] <= bounds[1]:
            raise ValueError(f"{info.field_name} is [low, high] with 0 <= low <= high, got {list(bounds)}")
        return bounds


class DiffusionSettings(_Section):
    enabled: bool = False
    model: str = "stabilityai/sd-turbo"  # a hub id or a local folder
    images: int = Field(50, ge=0)
    steps: int = Field(2, ge=1)
    image_size: tuple[int, int] = (512, 512)
    batch_size: int = Field(1, ge=1)


class ImageApiSettings(ApiSettings):
    """Images from an OpenAI-compatible `/images/generations` (generators/api_images.py): the diffusion
    prompts (the ontology's, varied by scene, light and viewpoint), unlabelled, as one more image source."""

    enabled: bool = False
    model: str = "gpt-image-1"
    images: int = Field(20, ge=0)
    size: str = "1024x1024"
    quality: str | None = "low"  # None: the server's default


class VerifySettings(ApiSettings):
    """The vision-language verifier: each auto-labelled image, its boxes drawn and numbered, goes to the
    model, which accepts, relabels or rejects each box with a reason (labelers/verifier.py)."""

    enabled: bool = False
    model: str = "gpt-4o-mini"
    detail: Literal["low", "high"] = "low"  # the API's image detail: low is 85 tokens an image
    max_side: int = Field(768, ge=64)  # the image is scaled down to this before it is sent
    max_answer_tokens: int = Field(1000, ge=50)


class AutoLabelSettings(_Section):
    labeler: str = "owlv2"  # owlv2, owlvit, teacher, none, or a labeler another package registers
    model: str = "google/owlv2-base-patch16-ensemble"  # hub id or local folder (or teacher model file)
    teacher_adapter: str | None = None  # for labeler "teacher": an adapter name (see labelers/teachers.py)
    teacher_classes: dict[str, str] = Field(default_factory=dict)  # teacher class -> ontology class
    # test-time augmentation of a teacher: the mirrored image and overlapping tiles (small objects larger)
    views: list[Literal["flip", "tiles"]] = Field(default_factory=list)
    threshold: float = Field(0.2, ge=0, le=1)
    nms_iou: float = Field(0.5, gt=0, le=1)
    class_agnostic_nms: bool = False
    batch_size: int = Field(4, ge=1)
    masks: bool = False  # run Segment Anything from the boxes
    sam_model: str = "facebook/sam-vit-base"

    @field_validator("labeler")
    @classmethod
    def _labeler_is_known(cls, name: str) -> str:
        from edgedistill.registry import plugin_names

        known = plugin_names("labelers")
        if name != "none" and name not in known:
            raise ValueError(f"there is no labeler called '{name}'; known ones: {', '.join(known + ['none'])}")
        return name

    @model_validator(mode="after")
    def _views_are_a_teachers(self) -> AutoLabelSettings:
        if self.views and self.labeler != "teacher":
            raise ValueError(f"autolabel.views are for `labeler: teacher`, not {self.labeler}; remove them")
        return self


class DetectorTrainSettings(_Section):
    input_size: int = Field(96, ge=32)
    grayscale: bool = False
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    patience: int = Field(8, ge=1)
    width: float = Field(0.35, gt=0, le=1)  # MobileNet width multiplier
    val_share: float = Field(0.15, gt=0, lt=1)
    test_share: float = Field(0.2, gt=0, lt=1)
    centroid_distance: float = Field(0.1, gt=0)  # F1 match radius, as a share of the input size
    # loss weight of an object cell against a background cell; Edge Impulse uses 100, but with the score
    # threshold chosen on validation data 10 gave fewer false alarms (faces: F1 0.84 against 0.79)
    object_weight: float = Field(10.0, gt=0)
    # share of training images made of four at half size (mosaic): smaller, denser objects, as in crowds
    mosaic: float = Field(0.0, ge=0, le=1)
    # online hard-negative mining: background cells the student takes for an object in a training batch
    # (its false alarms, label-free photos included) weigh this many times more in that batch's loss
    hard_negative_weight: float = Field(1.0, ge=1)
    # soft labels: an object's cell learns its labeler's score (the teacher's confidence) as the object's
    # probability instead of 1; with a lowered autolabel.threshold the doubtful boxes teach doubt, not background
    soft_labels: bool = False
    seed: int = 0
    yolo: bool = False  # also train a YOLO model (needs the optional `yolo` extra, AGPL-3.0)
    yolo_model: str = "yolo11n.yaml"
    yolo_epochs: int = Field(100, ge=1)
    yolo_image_size: int = Field(320, ge=32)


class DetectionRecipe(_Recipe):
    task: Literal["detection"]
    classes: dict[str, DetectionClass]
    images: str | None = None  # the team's own unlabelled photos
    compositing: CompositingSettings = Field(default_factory=CompositingSettings)
    diffusion: DiffusionSettings = Field(default_factory=DiffusionSettings)
    image_api: ImageApiSettings = Field(default_factory=ImageApiSettings)
    autolabel: AutoLabelSettings = Field(default_factory=AutoLabelSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    train: DetectorTrainSettings = Field(default_factory=DetectorTrainSettings)
    evaluate: DetectionEvaluateSettings = Field(default_factory=DetectionEvaluateSettings)

    @field_validator("classes", mode="before")
    @classmethod
    def _prompt_lists_are_classes(cls, classes: object) -> object:
        """`helmet: ["hard hat", "safety helmet"]` is short for `helmet: {prompts: [...]}`."""
        if isinstance(classes, dict):
            return {name: {"prompts": spec} if isinstance(spec, list) else spec for name, spec in classes.items()}
        return classes

    @field_validator("classes")
    @classmethod
    def _ontology_is_unambiguous(cls, classes: dict[str, DetectionClass]) -> dict[str, DetectionClass]:
        if not classes:
            raise ValueError("name at least one class with its prompts, e.g. `helmet: [\"hard hat\"]`")
        owner: dict[str, str] = {}
        for name, spec in classes.items():
            if not spec.prompts:
                raise ValueError(f"class '{name}' has no prompts")
            for prompt in spec.prompts:
                key = " ".join(prompt.casefold().split())
                if key in owner and owner[key] != name:
                    raise ValueError(f"prompt '{prompt}' maps to two classes: '{owner[key]}' and '{name}'")
                owner[key] = name
        return classes

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)


AnyRecipe = KeywordSpottingRecipe | DetectionRecipe
Recipe = Annotated[Union[KeywordSpottingRecipe, DetectionRecipe], Field(discriminator="task")]
_recipe_adapter: TypeAdapter[AnyRecipe] = TypeAdapter(Recipe)


def parse_recipe(data: object, origin: str = "recipe") -> AnyRecipe:
    if not isinstance(data, dict):
        raise EdgedistillError(f"{origin} must be a YAML mapping (key: value lines)",
                               "see recipes/digits.yaml for an example")
    if "task" not in data:
        raise EdgedistillError(f"{origin} has no `task:` field",
                               "add `task: keyword_spotting` or `task: detection`")
    try:
        return _recipe_adapter.validate_python(data)
    except ValidationError as error:
        tagged = data.get("task") in ("keyword_spotting", "detection")
        raise EdgedistillError(f"{origin} is not a valid recipe:\n{describe_validation_error(error, skip=int(tagged))}",
                               "fix the fields named above; recipes/ has examples") from None


class _RecipeLoader(yaml.SafeLoader):
    """YAML with YAML 1.2 booleans: only true/false. YAML 1.1 reads yes/no/on/off as booleans,
    and `keywords: [yes, no, on, off]` must stay four words."""


_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                    list("tTfF"))


def load_recipe(path: str | Path) -> AnyRecipe:
    path = Path(path)
    if not path.is_file():
        raise EdgedistillError(f"recipe {path} {'is a folder' if path.is_dir() else 'does not exist'}",
                               "give the path of the recipe's YAML file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_RecipeLoader)
    except UnicodeDecodeError as error:
        raise EdgedistillError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})",
                               "save the recipe as UTF-8") from None
    # PyYAML's constructors raise plain Python errors for some bad scalars: `!!int x`, `!!bool x`,
    # `!!timestamp 2020-99-99`, or an integer of more than 4300 digits
    except (yaml.YAMLError, ValueError, KeyError, AttributeError, TypeError) as error:
        raise EdgedistillError(f"{path} is not valid YAML: {error}", "fix the syntax") from None
    except RecursionError:
        raise EdgedistillError(f"{path} nests its YAML too deeply to read", "fix the brackets") from None
    return parse_recipe(data, origin=str(path))
