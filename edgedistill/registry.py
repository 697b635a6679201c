"""Plugins by name, through Python entry points, so another package can add one.

Two kinds are named in recipes: speech engines (`speech.engines`) and labelers (`autolabel.labeler`:
a class built from the recipe's classes and autolabel settings, edgedistill.labelling.BoxLabeler).
A package adds one under `[project.entry-points."edgedistill.labelers"]`.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Literal

from edgedistill.errors import EdgedistillError

Group = Literal["labelers", "speech_engines"]


def plugin_names(group: Group) -> list[str]:
    return sorted(ep.name for ep in entry_points(group=f"edgedistill.{group}"))


def load_plugin(group: Group, name: str) -> Any:
    found = [ep for ep in entry_points(group=f"edgedistill.{group}") if ep.name == name]
    if not found:
        known = ", ".join(plugin_names(group)) or "none (is edgedistill installed with pip install -e .?)"
        raise EdgedistillError(f"there is no {group[:-1].replace('_', ' ')} called '{name}'",
                               f"known ones: {known}")
    return found[0].load()
