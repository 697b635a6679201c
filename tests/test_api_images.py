"""Images from an OpenAI-compatible image endpoint on loopback (tests/openai_server.py), through the
real `openai` client and the detection pipeline's generate step: the diffusion prompts asked once
each (a rerun is served from the dataset's cache), the budget planned before any request, and an
answer that is no image recorded as a failure while the others are kept."""

import pytest

from edgedistill.dataset import Dataset
from edgedistill.errors import EdgedistillError
from edgedistill.images import load_image
from edgedistill.recipe import parse_recipe
from flows import detection
from flows.runs import RunPaths
from generators.api_images import request_of
from generators.diffusion import plan_prompts
from openai_server import KEY, OpenAiServer


def _recipe(server, **image_api):
    return parse_recipe({
        "task": "detection", "name": "helmets", "classes": {"helmet": ["a hard hat"], "vest": ["a safety vest"]},
        "autolabel": {"labeler": "none"}, "compositing": {"enabled": False},
        "image_api": {"enabled": True, "base_url": server.url, "images": 5, "size": "64x48", "retries": 1,
                      **image_api}})


def _generated(server, tmp_path, run: str = "run", **image_api):
    recipe = _recipe(server, **image_api)
    paths = RunPaths.of(recipe, tmp_path / run)
    version = detection.generate(recipe, paths)
    dataset = Dataset.open(paths.dataset)
    return recipe, dataset, dataset.version(version)


def test_the_prompts_are_asked_once_each_and_a_rerun_is_free(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAiServer() as server:
        recipe, dataset, version = _generated(server, tmp_path)
        asked = [r["body"] for r in server.requests]
        # another run folder, the same dataset: every image comes from the dataset's cache
        again = detection.generate(recipe, RunPaths.of(recipe, tmp_path / "run"))
        assert again == version.id and len(server.requests) == 5
    jobs = plan_prompts(recipe, 5)
    assert sorted(body["prompt"] for body in asked) == sorted(request_of(job, recipe.image_api)["prompt"]
                                                              for job in jobs)  # asked concurrently
    assert {(body["model"], body["size"], body["quality"], body["n"]) for body in asked} == {
        ("gpt-image-1", "64x48", "low", 1)}
    assert "response_format" not in asked[0]  # gpt-image models answer base64 and refuse the parameter
    samples = dataset.samples(version.id)
    assert len(samples) == 5 and {s.provenance.source for s in samples} == {"image-api"}
    assert [s.provenance.params["prompt"] for s in samples] == [job.prompt for job in jobs]
    assert all(s.labels == [] and s.provenance.group == f"prompt:{s.provenance.params['prompt']}" for s in samples)
    assert load_image(dataset.media_path(samples[0])).shape == (48, 64, 3)
    report = dataset.report(version)["image_api"]
    assert report == {"model": "gpt-image-1", "images": 5, "left_unmade": 0, "failures": [],
                      "api_usage": {"image_api": {"asked": 5, "from_cache": 0, "input_tokens": 0, "output_tokens": 0,
                                                  "characters": 0, "cost": pytest.approx(5 * 0.011)}}}


def test_the_budget_makes_what_it_affords_and_a_bad_answer_is_a_failure(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAiServer() as server:
        server.faults.extend(["garbage"])
        _, dataset, version = _generated(server, tmp_path, max_cost=0.04)  # 3 images at $0.011
        assert len(server.requests) == 3
    report = dataset.report(version)["image_api"]
    assert (report["images"], report["left_unmade"], len(report["failures"])) == (2, 2, 1)
    assert "is not an image that can be read" in report["failures"][0]["error"]
    assert len(dataset.samples(version.id)) == 2


def test_a_refusal_is_a_clear_error_no_version_is_made_and_the_rerun_asks_only_what_failed(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with OpenAiServer() as server:
        server.faults.extend(["404"])
        with pytest.raises(EdgedistillError, match="does not know model gpt-image-1"):
            _generated(server, tmp_path)
        assert Dataset.open(tmp_path / "run" / "dataset").info.versions == []
        first = len(server.requests)  # the refused one, and those in flight with it: answered, and cached
        _, dataset, version = _generated(server, tmp_path)
        assert len(server.requests) - first == 5 - (first - 1)  # only what was refused or never asked
    assert len(dataset.samples(version.id)) == 5
