"""The small keyword recipe the end-to-end tests run: "yes" and "no" from four voices of each engine."""

import yaml

TINY = {
    "task": "keyword_spotting", "name": "tiny", "keywords": ["yes", "no"],
    "speech": {"engines": ["espeak-ng", "flite"], "voices_per_engine": 4, "variants_per_voice": 2,
               "unknown_share": 0.5, "silence_share": 0.5},
    "augment": {"copies": 1},
    "whisper_check": {"clips_per_voice": 1},
    "train": {"epochs": 3, "width": 16, "val_share": 0.25, "test_share": 0.25},
    "export": {"max_int8_accuracy_drop": 1.0, "calibration_samples": 50},
}


def tiny_recipe(**sections: dict) -> str:
    """The recipe as YAML, each named section updated with the settings given for it."""
    recipe = {name: value | sections.pop(name, {}) if isinstance(value, dict) else value
              for name, value in TINY.items()}
    return yaml.safe_dump(recipe | sections, sort_keys=False)
