import os
from pathlib import Path

import pytest

from edgedistill.errors import EdgedistillError
from edgedistill.models import hub_offline, looks_like_path, model_source, model_unavailable


@pytest.mark.parametrize("value, offline", [("1", True), ("ON", True), ("on", True), ("Yes", True), (" true ", True),
                                            ("0", False), ("", False), ("off", False)])
def test_every_loader_reads_hf_hub_offline_as_huggingface_hub_does(monkeypatch, value, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert hub_offline() is offline
    assert model_source("google/owlv2-base-patch16-ensemble", "autolabel.model") == (
        "google/owlv2-base-patch16-ensemble", offline)


def test_a_folder_is_used_as_it_is_and_a_missing_one_names_the_setting(tmp_path):
    assert model_source(str(tmp_path), "diffusion.model") == (str(tmp_path), True)
    assert [looks_like_path(m) for m in ("tiny.en", "owner/name", "./name", "~/m", "a/b/c", "C:\\m")] == [
        False, False, True, True, True, True]
    with pytest.raises(EdgedistillError, match="does not exist") as error:
        model_source(str(tmp_path / "missing"), "autolabel.sam_model")
    assert "autolabel.sam_model" in error.value.hint


def test_an_unavailable_model_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = model_unavailable("owner/name", "autolabel.model", "OSError")
    assert "owner/name is not available here (OSError)" in offline.problem
    assert "hf download owner/name" in offline.hint and "HF_HUB_OFFLINE" in offline.hint
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    online = model_unavailable("owner/name", "autolabel.model", "OSError")
    assert "--local-dir DIR" in online.hint and "autolabel.model to DIR" in online.hint
    assert "save_pretrained" in model_unavailable(str(tmp_path), "diffusion.model", "no model_index.json").hint


def test_a_recipes_device_reaches_every_model_and_the_workers(monkeypatch, tmp_path):
    from pydantic import ValidationError

    from edgedistill.models import DEVICE_ENV, default_device
    from edgedistill.recipe import load_recipe
    from flows.run import open_recipe

    monkeypatch.delenv(DEVICE_ENV, raising=False)
    text = (Path(__file__).parents[1] / "recipes" / "faces.yaml").read_text()
    (tmp_path / "mps.yaml").write_text(text + "\ndevice: mps\n")
    (tmp_path / "plain.yaml").write_text(text)
    (tmp_path / "gpu.yaml").write_text(text + "\ndevice: gpu\n")
    assert open_recipe(tmp_path / "mps.yaml").device == "mps"
    assert default_device() == "mps" and os.environ[DEVICE_ENV] == "mps"  # worker processes inherit it
    open_recipe(tmp_path / "plain.yaml")
    assert DEVICE_ENV not in os.environ and default_device() in ("cpu", "cuda")
    with pytest.raises((ValidationError, EdgedistillError), match="device"):
        load_recipe(tmp_path / "gpu.yaml")
