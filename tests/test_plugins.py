"""A labeler from another package: found by its entry point, named in a recipe, run by the CLI."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgedistill.dataset import Dataset
from edgedistill.images import image_bytes

PLUGIN = '''
import numpy as np

from edgedistill.boxes import Detections
from edgedistill.dataset import LabelSource
from edgedistill.labelling import BoxLabeler


class WholeImage(BoxLabeler):
    """Boxes the whole image as the recipe's first class, scored by its brightness."""

    def load(self):
        self.source = LabelSource(labeler="whole_image", model="brightness", version="1")

    def boxes(self, images):
        first = next(iter(self.ontology))
        return [self.select(Detections([[0, 0, im.shape[1], im.shape[0]]], [im.mean() / 255], [0]),
                            np.array([first], dtype=object), im.shape[1], im.shape[0]) for im in images]
'''

RECIPE = """
task: detection
name: plugged
classes:
  lamp: ["lamp"]
images: {images}
autolabel:
  labeler: whole_image
  threshold: 0.5
compositing:
  enabled: false
"""


def install_plugin(site: Path) -> None:
    """What `pip install` of a package with this entry point leaves in site-packages."""
    (site / "wholeimage").mkdir(parents=True)
    (site / "wholeimage" / "__init__.py").write_text(PLUGIN)
    info = site / "wholeimage-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wholeimage\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[edgedistill.labelers]\nwhole_image = wholeimage:WholeImage\n")


def test_a_labeler_installed_as_a_package_runs_from_a_recipe(tmp_path):
    site = tmp_path / "site"
    install_plugin(site)
    images = tmp_path / "photos"
    images.mkdir()
    for name, level in (("bright.png", 230), ("dark.png", 20)):
        (images / name).write_bytes(image_bytes(np.full((48, 64, 3), level, np.uint8), "PNG"))
    recipe = tmp_path / "plugged.yaml"
    recipe.write_text(RECIPE.format(images=images))
    env = os.environ | {"PYTHONPATH": str(site), "PREFECT_HOME": str(tmp_path / "prefect")}
    for stage in ("generate", "label"):
        done = subprocess.run([sys.executable, "-m", "flows.cli", stage, str(recipe), "--out", str(tmp_path / "run")],
                              env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    dataset = Dataset.open(tmp_path / "run" / "dataset")
    labelled = dataset.samples(next(v for v in dataset.info.versions if v.stage == "autolabel").id)
    found = [[(label.class_name, label.box, label.source.labeler) for label in s.labels] for s in labelled]
    assert sorted(found) == [[], [("lamp", (0.0, 0.0, 64.0, 48.0), "whole_image")]]  # the dark photo scores 0.08
    bright = next(s for s in labelled if s.labels)
    assert bright.labels[0].score == pytest.approx(230 / 255, abs=1e-6)


def test_a_recipe_naming_an_unknown_labeler_lists_the_known_ones(tmp_path):
    from edgedistill.errors import EdgedistillError
    from edgedistill.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(images=tmp_path))
    with pytest.raises(EdgedistillError, match="no labeler called 'whole_image'.*owlv2, owlvit, teacher, none"):
        load_recipe(recipe)
