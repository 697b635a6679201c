"""Real edgedistill processes that run at once on one dataset, or are killed mid-run."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgedistill.dataset import Dataset

ROOT = Path(__file__).resolve().parents[1]


def _edgedistill(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})


def _coco_folder(folder: Path, images: int, seed: int) -> Path:
    """A COCO file of `images` distinct photos with a box each."""
    rng = np.random.default_rng(seed)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "cat"}]}
    for index in range(images):
        (folder / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)).save(folder / "images" / f"{index}.png")
        coco["images"].append({"id": index, "file_name": f"{index}.png", "width": 64, "height": 48})
        coco["annotations"].append({"id": index, "image_id": index, "category_id": 1, "bbox": [4, 4, 20, 16]})
    (folder / "instances.json").write_text(json.dumps(coco))
    return folder / "instances.json"


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_two_processes_importing_into_one_dataset_both_keep_their_version(tmp_path, where, request):
    location = request.getfixturevalue("bucket") + "/pets" if where == "bucket" else str(tmp_path / "pets")
    files = [_coco_folder(tmp_path / name, 80, seed) for seed, name in enumerate(("first", "second"))]
    running = [_edgedistill("import", "coco", str(file), location, cwd=tmp_path) for file in files]
    for process in running:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]

    dataset = Dataset.open(location)
    imports = [v for v in dataset.info.versions if v.stage == "import"]
    assert len(imports) == 2  # neither writer undid the other's entry in the history
    samples = [{s.id for s in dataset.samples(version.id)} for version in imports]  # each version whole
    assert [len(ids) for ids in samples] == [80, 80] and not samples[0] & samples[1]


def test_a_second_process_on_the_same_stage_is_told_who_runs_it_and_the_work_is_done_once(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("task: keyword_spotting\nname: tiny\nkeywords: [yes]\nspeech:\n  engines: [espeak-ng]\n"
                      "  voices_per_engine: 6\n  variants_per_voice: 3\n")
    out = tmp_path / "run"
    first = _edgedistill("generate", str(recipe), "--out", str(out), cwd=tmp_path)
    work = out / "dataset" / "work"
    while first.poll() is None and not list(work.glob("*.lock")):  # the first holds the stage
        time.sleep(0.05)
    second = _edgedistill("generate", str(recipe), "--out", str(out), cwd=tmp_path)
    _, refused = second.communicate(timeout=600)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-2000:]
    assert second.returncode == 2
    assert f"stage synthesize of {out / 'dataset'} is being run by another edgedistill process: pid {first.pid}" \
        in " ".join(refused.split())

    again = _edgedistill("generate", str(recipe), "--out", str(out), cwd=tmp_path)  # finds the version
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr[-2000:]
    assert [v.stage for v in Dataset.open(out / "dataset").info.versions] == ["synthesize"]
    assert not list(work.glob("*")), "the work folder and its lock are cleaned up"
