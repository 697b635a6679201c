from pathlib import Path

import pytest

from edgedistill.errors import EdgedistillError
from edgedistill.recipe import load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_default_digits_recipe_has_sensible_defaults():
    recipe = load_recipe(ROOT / "recipes" / "digits.yaml")
    assert recipe.keywords[:2] == ["zero", "one"]
    assert recipe.classes[-2:] == ["_unknown_", "_silence_"]
    assert recipe.sample_rate == 16000 and recipe.whisper_check.enabled


@pytest.mark.parametrize("keywords, message", [
    ([], "at least one keyword"),
    (["yes", "Yes"], "listed twice"),
    (["yes", "  "], "empty"),
    (["_silence_"], "reserved"),
])
def test_bad_keyword_lists_are_named(keywords, message):
    with pytest.raises(EdgedistillError, match=message) as caught:
        parse_recipe({"task": "keyword_spotting", "name": "x", "keywords": keywords})
    assert "keywords" in str(caught.value)


def test_multi_word_and_non_ascii_keywords_are_allowed_and_normalised():
    recipe = parse_recipe({"task": "keyword_spotting", "name": "x", "keywords": ["hey   edge", "café"]})
    assert recipe.keywords == ["hey edge", "café"]


def test_unknown_field_and_bad_value_name_the_field():
    with pytest.raises(EdgedistillError, match="speech.colour"):
        parse_recipe({"task": "keyword_spotting", "name": "x", "keywords": ["a"], "speech": {"colour": 1}})
    with pytest.raises(EdgedistillError, match="train.epochs"):
        parse_recipe({"task": "keyword_spotting", "name": "x", "keywords": ["a"], "train": {"epochs": 0}})
    with pytest.raises(EdgedistillError, match="no `task:`"):
        parse_recipe({"name": "x"})


def test_yaml_errors_are_reported(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("task: [unclosed")
    with pytest.raises(EdgedistillError, match="not valid YAML"):
        load_recipe(path)
    with pytest.raises(EdgedistillError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")


def test_yes_no_on_off_stay_words_and_true_false_stay_booleans(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("task: keyword_spotting\nname: x\nkeywords: [yes, no, on, off]\nwhisper_check: {enabled: false}\n")
    recipe = load_recipe(path)
    assert recipe.keywords == ["yes", "no", "on", "off"] and recipe.whisper_check.enabled is False


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(recipe):
    assert load_recipe(recipe).name == recipe.stem
