"""Words for the `_unknown_` class: common English words and words that sound like the keywords.

Sound-alikes are the hard negatives a keyword spotter must learn to reject ("seven" vs "heaven").
They are found by edit distance on espeak-ng's phonemes (`espeak-ng -q -x`), or on spelling when
espeak-ng is missing.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

COMMON_WORDS: tuple[str, ...] = tuple("""
the be to of and a in that have it for not on with he as you do at this but his by from they we
say her she or an will my all would there their what so up out if about who get which go me when
make can like time just him know take people into year your good some could them see other than
then now look only come its over think also back after use how our work first well way even new
want because any these give day most us great between need large often hand high place hold turn
house world air away animal answer apple around baby ball bank bed bird black blue boat body book
bottle box boy bread bridge brother brown car card cat chair city clean clock close cloud coat
cold color cook cool corner country cup dark desk dinner dog door down dream dress drink drive
early earth eat egg empty end evening eye face fall family farm fast father field fire fish
floor flower fly food foot forest friend front full game garden girl glass gold green ground
group grow hair happy hat head hear heart heavy help hill horse hot hour house ice idea inside
island jump key kitchen lake lamp late laugh leaf learn left letter light line lion listen
little long loud low lunch machine map market milk minute money month moon morning mother
mountain mouth music name night noise north number ocean open orange page paper park party
pencil picture piece plant play pocket pretty quiet rain red river road rock room round run
salt sand school sea second shoe short shout sing sister sky sleep slow small smile snow soft
song sound south spoon spring square stand star station stone story street strong sugar summer
sun table talk tall teacher thing today tomorrow tonight top town train tree under until voice
wait walk wall warm watch water weather week west wet white wind window winter woman wood word
write yellow yesterday young button camera coffee computer data energy engine garage heater
kettle light lock message mirror motor music network phone printer radio screen speaker switch
system timer video volume wallet weather yellow cancel continue finish forward pause repeat
return select start stop begin maybe hello thanks sorry please okay alright really never always
""".split())

# rhymes and near-misses that a list of common words would not hold
CONFUSABLE_WORDS: tuple[str, ...] = tuple("""
hero zebra zeros won wan none gun run sun too tube tool tea toe tree three free freeze thee
for fore far fur floor fire fine file five hive wive dive drive sick sex sits socks sax six
heaven eleven seventh leaven sever severn ate eighty weight bait date gate late hate eight
nine nigh knife mine wine line night ninety nineteen no know yes yet mess guess off of on in
up down left right stop go hey hi high hay okay hello yellow mellow fellow computer commuter
alexa alexia elixir siri series cereal sierra google goggle noodle marvin martin carvin sheila
bed bird cat dog house tree wow happy learn follow forward backward visual
""".split())

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "sh", "ch",
           "th", "st", "tr", "br", "fl")
_STRESS_AND_LENGTH = re.compile(r"[',:_;%=!]")


def _phoneme_strings(words: list[str]) -> list[str] | None:
    """espeak-ng's ASCII phonemes of each word, or None when espeak-ng is not installed."""
    if shutil.which("espeak-ng") is None or not words:
        return None
    text = "".join(f"{word}.\n" for word in words)  # one clause, so one output line, per word
    result = subprocess.run(["espeak-ng", "-q", "-x", "-v", "en-us"], input=text, capture_output=True,
                            text=True, check=False, timeout=120)
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or len(lines) != len(words):
        return None
    return [_STRESS_AND_LENGTH.sub("", line).replace(" ", "") for line in lines]


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _respellings(word: str) -> list[str]:
    """Pseudo-words one sound away: a new onset ("seven" -> "heven", "zeven")."""
    match = re.match(r"^([^aeiouy]*)(.+)$", word.lower())
    if match is None or not match.group(2):
        return []
    onset, rest = match.groups()
    return [new + rest for new in _ONSETS if new != onset]


@functools.lru_cache(maxsize=256)
def _sound_alikes_cached(keyword: str, limit: int) -> tuple[str, ...]:
    words = keyword.split()
    if len(words) > 1:
        return _phrase_alikes(words, limit)
    folded = keyword.casefold()
    # a word that starts with the keyword ("zeros") holds it: a spotter is right to fire on it
    pool = sorted({w for w in (*COMMON_WORDS, *CONFUSABLE_WORDS, *_respellings(keyword))
                   if not w.casefold().startswith(folded)})
    phonemes = _phoneme_strings([keyword, *pool])
    target, spoken = (phonemes[0], phonemes[1:]) if phonemes else (folded, [w.casefold() for w in pool])
    scored = []
    for word, sound in zip(pool, spoken):
        distance = edit_distance(target, sound) / max(len(target), len(sound), 1)
        if 0 < distance <= 0.5:  # 0 would be a homophone: it *is* the keyword to a listener
            scored.append((distance, word not in CONFUSABLE_WORDS and word not in COMMON_WORDS, word))
    return tuple(word for _, _, word in sorted(scored)[:limit])


def _phrase_alikes(words: list[str], limit: int) -> tuple[str, ...]:
    """For "hey robot": each word alone, and the phrase with one word swapped for a sound-alike."""
    found = list(words)
    for index, word in enumerate(words):
        for alike in _sound_alikes_cached(word, 3):
            found.append(" ".join([*words[:index], alike, *words[index + 1:]]))
    return tuple(found[:limit])


def sound_alikes(keyword: str, limit: int = 12) -> list[str]:
    """Words (and pseudo-words) that sound close to `keyword` but are not it, closest first."""
    return list(_sound_alikes_cached(" ".join(keyword.split()), limit))


def unknown_words(keywords: list[str], extra: list[str] | None = None) -> list[str]:
    """The `_unknown_` vocabulary: `extra` when a recipe lists its own words, else the built-in
    common words plus sound-alikes of every keyword; never a keyword itself (case-insensitive)."""
    taken = {k.casefold() for k in keywords}
    if extra is not None:
        candidates = list(extra)
    else:
        candidates = [*COMMON_WORDS, *(alike for k in keywords for alike in sound_alikes(k))]
    seen: set[str] = set()
    result = []
    for word in (" ".join(w.split()) for w in candidates):
        if word and word.casefold() not in taken and word.casefold() not in seen:
            seen.add(word.casefold())
            result.append(word)
    return result
