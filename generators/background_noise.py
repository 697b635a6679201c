"""Real background noise for augmentation: recordings of water, wind, rain, fire, traffic, machines,
crowds, doors, footsteps, impacts, clicks and music, from sound files that Debian packages ship.

Coloured noise alone teaches a keyword spotter that the world hisses; real rooms hum, clatter and play
music. These sources install with `make setup` (scripts/install-debian-packages.sh); what each holds and
its licence, as its Debian copyright file states (none is non-commercial; share-alike terms apply to
redistributing the audio, which edgedistill never does: it mixes excerpts into training clips):

| package | what | licence |
|---|---|---|
| ufoai-sound | ambience loops (wind, thunder, fire, water, crickets, pumps, machinery), doors, footsteps, impacts | GPL-2+, some files CC-BY-3.0 / CC-BY-SA-3.0 / public domain |
| scorched3d-data | birds, waves, frogs, rain, traffic, sirens, horns, aircraft, a factory, a cheering crowd | GPL-2+, `apoc` files CC-BY-SA-3 |
| lincity-ng-data | city loops (traffic, trains, industry, harbour, markets, crowds, farms, water, fire), music | GPL-2+ |
| warzone2100-music | instrumental music | CC-BY-SA-3.0+ or GPL-2+ |
| minetest-data | water and lava loops, fire, footsteps, digging, doors | CC-BY-SA-3.0, CC-BY-3.0, CC0-1.0 |
| sound-theme-freedesktop | desktop clicks, bells and alerts | GPL-2/2+, CC-BY-3.0, CC-BY-SA-3.0 |

Files with voices (screams, radio chatter, TV news, spoken channel names) are left out. Each file
belongs to one split by a seeded hash of its name, so held-out clips are mixed with noises that
training never heard.
"""

from __future__ import annotations

import functools
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from edgedistill.dataset import Split, cache_dir
from edgedistill.splits import hash_rank

GAMES = Path("/usr/share/games")
UFOAI_ARCHIVE = GAMES / "ufoai" / "base" / "0snd.pk3"  # ufoai keeps its sounds in a zip
NOISE_SPLIT_SHARES = {"test": 0.2, "val": 0.15}  # of the files; the rest train
MIN_SECONDS = 0.3


@dataclass(frozen=True)
class NoiseSource:
    package: str
    patterns: tuple[str, ...]  # globs under the source's root
    exclude: str | None = None  # a regex on the path: files with voices


def _ufoai_root() -> Path:
    """ufoai's sound folders, unpacked once from its zip into the cache (whole or not at all)."""
    root = cache_dir() / "noise" / "ufoai"
    if not root.exists() and UFOAI_ARCHIVE.is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".ufoai-", dir=root.parent))
        with zipfile.ZipFile(UFOAI_ARCHIVE) as archive:
            archive.extractall(staging, [n for n in archive.namelist() if n.startswith("sound/") and n.endswith(".ogg")])
        try:
            staging.rename(root)
        except OSError:  # another process unpacked it first
            shutil.rmtree(staging, ignore_errors=True)
    return root / "sound"


SOURCES = (
    NoiseSource("ufoai-sound", tuple(f"{folder}/*.ogg" for folder in (
        "ambience", "doors", "footsteps", "impact", "misc", "ugv", "weapons", "geoscape", "ui", "seq")),
        r"radiomessage|tv_news|/misc/talk\.ogg|/misc/popup\.ogg"),
    NoiseSource("scorched3d-data", ("scorched3d/data/globalmods/*/data/wav/**/*.wav",
                                    "scorched3d/data/globalmods/none/data/music/*.ogg"),
                r"scream|fight4life|laserdeath|beamup"),
    NoiseSource("lincity-ng-data", ("lincity-ng/sounds/*.wav", "lincity-ng/music/default/*.ogg"),
                r"Substation|/Click\.wav|Shanty3|FireStation1"),
    NoiseSource("warzone2100-music", ("warzone2100/music/*.opus", "warzone2100/music/albums/*/*.opus")),
    NoiseSource("minetest-data", ("minetest/games/minetest_game/mods/*/sounds/*.ogg",),
                r"player_damage|default_wood_footstep\.1|default_chest_open"),
    NoiseSource("sound-theme-freedesktop", ("/usr/share/sounds/freedesktop/stereo/*.oga",),
                r"audio-channel-|audio-test-signal"),
)


@dataclass(frozen=True)
class NoiseFile:
    path: str
    seconds: float
    source: str  # the package, or the folder a recipe named


def _source_root(source: NoiseSource) -> Path:
    return _ufoai_root() if source.package == "ufoai-sound" else GAMES


def _matching(root: Path, patterns: tuple[str, ...], exclude: str | None) -> list[Path]:
    found = set()
    for pattern in patterns:
        base, relative = (Path("/"), pattern[1:]) if pattern.startswith("/") else (root, pattern)
        found.update(base.glob(relative))
    return sorted(p for p in found if p.is_file() and not (exclude and re.search(exclude, str(p))))


def _described(paths: list[Path], source: str) -> list[NoiseFile]:
    files = []
    for path in paths:
        try:
            seconds = soundfile.info(path).duration
        except (soundfile.LibsndfileError, RuntimeError):
            continue  # not audio libsndfile reads: skipped, as a photo folder skips non-images
        if seconds >= MIN_SECONDS:
            files.append(NoiseFile(str(path), round(seconds, 3), source))
    return files


@functools.lru_cache(maxsize=8)
def find_noise(folders: tuple[str, ...] | None = None) -> tuple[NoiseFile, ...]:
    """Every noise recording: in `folders` (any audio under them) when given, else the packaged sources
    installed here. Empty when none is installed: augmentation then uses coloured noise and babble only."""
    if folders is not None:
        return tuple(f for folder in folders for f in _described(
            _matching(Path(folder).expanduser(), ("**/*",), None), folder))
    return tuple(f for source in SOURCES for f in _described(
        _matching(_source_root(source), source.patterns, source.exclude), source.package))


def noise_split(file: NoiseFile, seed: int) -> Split:
    """A file's split, from a seeded hash of its name: the same on every run and every machine."""
    rank = hash_rank(Path(file.path).name, seed)
    if rank < NOISE_SPLIT_SHARES["test"]:
        return "test"
    return "val" if rank < NOISE_SPLIT_SHARES["test"] + NOISE_SPLIT_SHARES["val"] else "train"


def noise_excerpt(file: NoiseFile, length: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """`length` samples at `rate` from a random place in the file (a short file is looped), unit RMS."""
    with soundfile.SoundFile(file.path) as source:
        wanted = int(np.ceil(length * source.samplerate / rate)) + 16
        start = int(rng.integers(0, max(1, source.frames - wanted)))
        source.seek(start)
        audio = source.read(min(wanted, source.frames), dtype="float32", always_2d=True).mean(axis=1)
        native = source.samplerate
    audio = np.resize(audio, wanted) if audio.size < wanted else audio  # loops a short recording
    if native != rate:
        audio = soxr.resample(audio, native, rate)
    audio = np.resize(audio, length).astype(np.float32)
    level = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    return audio / level if level > 1e-6 else audio
