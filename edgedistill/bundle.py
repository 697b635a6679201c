"""The bundle a device team receives, and the manifest that says exactly how to feed its model."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgedistill.dataset import sha256_file, write_atomic
from edgedistill.errors import EdgedistillError, describe_validation_error
from edgedistill.streaming import StreamingSpec

MANIFEST = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BundleFile(_Strict):
    path: str
    sha256: str
    bytes: int
    role: str  # model_int8, model_float_onnx, c_header, vela_report, model_card, report


class Quantization(_Strict):
    scale: float
    zero_point: int
    dtype: Literal["int8", "uint8", "float32"] = "int8"


class InputSpec(_Strict):
    kind: Literal["audio", "image"]
    shape: list[int]  # the model input tensor, batch first
    quantization: Quantization | None = None
    frontend: dict[str, Any]  # every parameter of the feature front end (MfccFrontEnd.spec())


class OutputSpec(_Strict):
    shape: list[int]
    quantization: Quantization | None = None
    activation: Literal["logits", "probabilities"] = "logits"


class Manifest(_Strict):
    format_version: int = 1
    name: str
    task: str
    labels: list[str]
    input: InputSpec
    output: OutputSpec
    streaming: StreamingSpec | None = None  # keyword models: how the device slides, smooths and thresholds
    files: list[BundleFile]
    metrics: dict[str, dict[str, Any]] = Field(default_factory=dict)  # "float", "int8"
    targets: dict[str, dict[str, Any]] = Field(default_factory=dict)  # "tflite_micro", "vela"
    dataset: dict[str, Any] = Field(default_factory=dict)  # path and version that trained it
    recipe: dict[str, Any] = Field(default_factory=dict)
    created: datetime
    edgedistill_version: str

    def file(self, role: str) -> BundleFile:
        for entry in self.files:
            if entry.role == role:
                return entry
        raise EdgedistillError(f"bundle {self.name} has no {role} file", "re-export the bundle")


def describe_file(root: Path, relative: str, role: str) -> BundleFile:
    path = root / relative
    return BundleFile(path=relative, sha256=sha256_file(path), bytes=path.stat().st_size, role=role)


def write_manifest(root: Path, manifest: Manifest) -> Path:
    path = root / MANIFEST
    write_atomic(path, manifest.model_dump_json(indent=2).encode())
    return path


def load_bundle(root: str | Path) -> Manifest:
    """Read a bundle's manifest and check every file against its recorded hash."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise EdgedistillError(f"{root} is not a bundle: it has no {MANIFEST}",
                               "pass the bundle folder that `edgedistill run` or `export` wrote")
    try:
        manifest = Manifest.model_validate_json(path.read_bytes())
    except ValidationError as error:
        raise EdgedistillError(f"{path} is not a valid bundle manifest:\n{describe_validation_error(error)}",
                               "re-export the bundle") from None
    for entry in manifest.files:
        file_path = root / entry.path
        if not file_path.is_file():
            raise EdgedistillError(f"bundle file {entry.path} is missing from {root}",
                                   "copy the whole bundle folder, or re-export it")
        if sha256_file(file_path) != entry.sha256:
            raise EdgedistillError(f"bundle file {entry.path} does not match its sha256 in {MANIFEST}: "
                                   "it was changed or damaged after export",
                                   "copy the bundle again from its source, or re-export it")
    return manifest
