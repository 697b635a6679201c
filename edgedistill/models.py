"""Where a foundation model's weights come from, under one offline policy, and where it runs.

A recipe names a model as a local folder or a Hugging Face hub id. A folder is used as it is; a hub id
comes from the Hugging Face cache, and is downloaded only when HF_HUB_OFFLINE is not set. Every loader
(OWL, SAM, diffusion, Whisper) asks here, so they agree on what counts as offline and say alike what is
missing and how to get it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgedistill.errors import EdgedistillError


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it: 1, ON, YES or TRUE, in any case."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def looks_like_path(model: str) -> bool:
    """Hub ids are `owner/name` or a bare name; a leading '.', '/' or '~', a backslash or a second '/' is a folder."""
    return model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1


def model_source(model: str, setting: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether only local files may be used). `setting` is the recipe
    field that names the model, for the error when a folder does not exist."""
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path), True
    if looks_like_path(model):
        raise EdgedistillError(f"the model folder {path} does not exist",
                               f"check {setting} in the recipe (a hub id or a local folder)")
    return model, hub_offline()


def model_unavailable(model: str, setting: str, detail: str) -> EdgedistillError:
    """The error for a model whose files cannot be loaded: which, why, and how to get them."""
    if Path(model).expanduser().is_dir():
        hint = f"the folder holds no complete model: save one there with save_pretrained, or change {setting}"
    elif hub_offline():
        hint = (f"HF_HUB_OFFLINE is set: download it where there is network (`hf download {model}`) and copy the "
                f"Hugging Face cache here, or save it to a folder and set {setting} to that folder")
    else:
        hint = (f"check the id and the network, or download it (`hf download {model} --local-dir DIR`) and set "
                f"{setting} to DIR")
    return EdgedistillError(f"the model {model} is not available here ({detail})", hint)


def load_config(model: str, setting: str) -> Any:
    """The transformers config of `model` (hub id or folder); `setting` is the recipe field naming it."""
    from transformers import AutoConfig

    source, local_only = model_source(model, setting)
    try:
        return AutoConfig.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as error:  # missing files, no network, or a folder without config.json
        raise model_unavailable(model, setting, f"{type(error).__name__}: {str(error).splitlines()[0][:200]}") from None


def load_pretrained(model: str, setting: str, network_class: Any) -> tuple[Any, Any, str]:
    """A transformers model at `model` with its processor, on the device, in eval mode: (network,
    processor, device); when its files are missing, the one error that says how to get them."""
    from transformers import AutoProcessor

    source, local_only = model_source(model, setting)
    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
        network = network_class.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as error:
        raise model_unavailable(model, setting, f"weights or processor: {type(error).__name__}") from None
    device = default_device()
    return network.to(device).eval(), processor, device


DEVICE_ENV = "EDGEDISTILL_DEVICE"  # the recipe's `device:`, in the environment so worker processes see it too


def use_device(device: str | None) -> None:
    """Run every model of this process, and of the worker processes it starts, on `device` (None: the default)."""
    if device:
        os.environ[DEVICE_ENV] = device
    else:
        os.environ.pop(DEVICE_ENV, None)


def default_device() -> str:
    """The recipe's device (`use_device`), else the GPU when there is one, else the CPU."""
    import torch

    return os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
