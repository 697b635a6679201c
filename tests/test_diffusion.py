"""Text-to-image through the real loading path, with a tiny random Stable Diffusion pipeline.

No diffusion weights can be had offline: the pipeline is built from configs (OFFLINE.md), saved
with save_pretrained and loaded by `generate_images` exactly as a downloaded model would be.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")

from edgedistill.dataset import Dataset, MediaPolicy, OntologyClass
from edgedistill.errors import EdgedistillError
from edgedistill.images import load_image
from edgedistill.recipe import DetectionRecipe, parse_recipe
from generators.diffusion import generate_images, load_text_to_image, plan_prompts


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    characters = list(bytes_to_unicode().values())
    tokens = [*characters, *(c + "</w>" for c in characters), "<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory) -> Path:
    """A random Stable Diffusion pipeline saved like a real one (UNet 32/64 channels, tiny VAE and CLIP)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("tiny_sd")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    tokenizer = _tokenizer(root / "tokenizer_source")
    end = len(tokenizer) - 1
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=end - 1, eos_token_id=end, pad_token_id=end, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer), projection_dim=32))
    pipeline = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                       scheduler=EulerDiscreteScheduler(), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(root / "pipeline")
    return root / "pipeline"


def _recipe(model: str, images: int = 3, batch_size: int = 2, seed: int = 0) -> DetectionRecipe:
    return parse_recipe({
        "task": "detection", "name": "hardhats", "seed": seed,
        "classes": {"helmet": {"prompts": ["hard hat", "safety helmet"], "negative_prompts": ["baseball cap"]},
                    "person": ["worker"]},
        "diffusion": {"enabled": True, "model": model, "images": images, "steps": 2, "image_size": [64, 64],
                      "batch_size": batch_size}})


def _dataset(root: Path, recipe: DetectionRecipe) -> Dataset:
    ontology = [OntologyClass(name=name, prompts=spec.prompts) for name, spec in recipe.classes.items()]
    return Dataset.create(root, recipe.name, "detection", ontology, MediaPolicy(image_size=(64, 64)))


def test_prompts_vary_and_come_from_the_ontology():
    jobs = plan_prompts(_recipe("unused", images=12), 12)
    assert [job.class_name for job in jobs[:4]] == ["helmet", "person", "helmet", "person"]
    assert len({job.prompt for job in jobs}) == 12 and len({job.seed for job in jobs}) == 12
    for job in jobs:
        assert ("hard hat" in job.prompt or "safety helmet" in job.prompt) if job.class_name == "helmet" \
            else "worker" in job.prompt
    assert "baseball cap" in jobs[0].negative_prompt and "baseball cap" not in jobs[1].negative_prompt
    assert [job.seed for job in plan_prompts(_recipe("unused", images=12), 12)] == [job.seed for job in jobs]


def test_tiny_pipeline_makes_unlabelled_images_with_seeds(tmp_path, tiny_pipeline):
    recipe = _recipe(str(tiny_pipeline))
    dataset = _dataset(tmp_path / "a", recipe)
    samples = generate_images(dataset, recipe, tmp_path / "a" / "work")
    jobs = plan_prompts(recipe, recipe.diffusion.images)
    assert len(samples) == 3
    for sample, job in zip(samples, jobs):
        assert sample.labels == [] and sample.kind == "image"
        assert sample.provenance.source == "diffusion" and sample.provenance.seed == job.seed
        assert sample.provenance.params["prompt"] == job.prompt
        assert sample.provenance.params["model"] == str(tiny_pipeline)
        assert sample.provenance.params["guidance_scale"] == 0.0  # 2 steps: a turbo-style model
        assert load_image(dataset.media_path(sample)).shape == (64, 64, 3)

    # an image depends on its seed only: one at a time gives the same pictures as batches of two
    single = _recipe(str(tiny_pipeline), batch_size=1)
    other = generate_images(_dataset(tmp_path / "b", single), single, tmp_path / "b" / "work")
    for first, second in zip(samples, other):
        a = load_image(dataset.media_path(first)).astype(int)
        b = load_image(Path(tmp_path / "b") / second.media).astype(int)
        assert np.abs(a - b).mean() < 2


def test_a_deleted_shard_is_made_again(tmp_path, tiny_pipeline):
    recipe = _recipe(str(tiny_pipeline), images=10, batch_size=2)  # shards of 8: two shards
    dataset = _dataset(tmp_path, recipe)
    first = generate_images(dataset, recipe, tmp_path / "work")
    shards = sorted((tmp_path / "work").glob("*/shard-*.jsonl"))
    assert len(shards) == 2
    shards[1].unlink()
    again = generate_images(dataset, recipe, tmp_path / "work")
    assert [s.provenance.seed for s in again] == [s.provenance.seed for s in first]
    assert shards[1].exists()


def test_a_missing_hub_model_is_named_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EdgedistillError, match="nobody/no-such-diffusion-model") as error:
        load_text_to_image("nobody/no-such-diffusion-model")
    assert "HF_HUB_OFFLINE" in str(error.value) and "hf download" in error.value.hint


def test_a_missing_or_wrong_local_folder_is_an_error(tmp_path):
    with pytest.raises(EdgedistillError, match="does not exist") as error:
        load_text_to_image(str(tmp_path / "missing"))
    assert "diffusion.model" in error.value.hint
    (tmp_path / "not_a_pipeline").mkdir()
    (tmp_path / "not_a_pipeline" / "config.json").write_text("{}")
    with pytest.raises(EdgedistillError, match="not_a_pipeline is not available") as error:
        load_text_to_image(str(tmp_path / "not_a_pipeline"))
    assert "save_pretrained" in error.value.hint and "diffusion.model" in error.value.hint


def test_image_size_must_suit_the_model(tmp_path):
    recipe = _recipe("unused").model_copy(deep=True)
    recipe.diffusion.image_size = (60, 64)
    with pytest.raises(EdgedistillError, match="multiple of 8"):
        generate_images(_dataset(tmp_path, recipe), recipe, tmp_path / "work")
