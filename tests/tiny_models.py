"""Tiny random foundation models for offline tests and benchmarks, saved exactly as real weights are
laid out, so the product loads them through the same code path: OWL-ViT/OWLv2 and SAM (transformers),
and a Meta segment-anything checkpoint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from edgedistill.extras import torchvision_python
from labelers.owl import OWL_KINDS
from labelers.sam_meta import WORKER

TINY = {"image_size": 64, "embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": [1],
        "window_size": 4, "prompt_dim": 32, "decoder_mlp_dim": 64, "decoder_heads": 2}


def save_tiny_owl(folder: Path, kind: str = "owlv2", image_size: int = 96, seed: int = 0,
                  base_size: bool = False) -> Path:
    """Save a random OWL model small enough for a CPU test, with a processor and a local CLIP
    tokenizer, laid out exactly like downloaded weights (so `labelers.owl.load_owl(folder)` is the real path).

    `base_size=True` gives the shape of the released base models instead (OWLv2 B/16 at 960 px,
    OWL-ViT B/32 at 768 px) with random weights: their speed, for benchmarks without the weights."""
    import torch
    from transformers import (CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2Processor, OwlViTConfig,
                              OwlViTForObjectDetection, OwlViTProcessor)
    from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil
    from transformers.models.owlvit.image_processing_pil_owlvit import OwlViTImageProcessorPil

    folder = Path(folder)
    tokenizer = save_tiny_clip_tokenizer(folder / "tokenizer-source")
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer, model_max_length=16)
    tokens = dict(vocab_size=len(tokenizer), max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if base_size:
        image_size = 960 if kind == "owlv2" else 768
        text = dict(tokens, hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=image_size, patch_size=16 if kind == "owlv2" else 32)
    else:
        text = dict(tokens, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      image_size=image_size, patch_size=16)
    projection = 512 if base_size else 32
    size = {"height": image_size, "width": image_size}
    torch.manual_seed(seed)
    if kind == "owlv2":
        network = Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=projection))
        processor = Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size=size), tokenizer=tokenizer)
    elif kind == "owlvit":
        network = OwlViTForObjectDetection(OwlViTConfig(text_config=text, vision_config=vision, projection_dim=projection))
        processor = OwlViTProcessor(image_processor=OwlViTImageProcessorPil(size=size, crop_size=size),
                                    tokenizer=tokenizer)
    else:
        raise ValueError(f"kind must be one of {OWL_KINDS}")
    with torch.no_grad():  # tame the random heads: boxes near each patch's prior, scores spread out, not 0 or 1
        network.box_head.dense2.weight.mul_(0.02)
        network.class_head.logit_shift.weight.mul_(0.05)
        network.class_head.logit_scale.weight.mul_(0.05)
    network.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_clip_tokenizer(folder: Path) -> Path:
    """A byte-level CLIP BPE vocabulary with no merges (every word is spelled in characters)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder.mkdir(parents=True, exist_ok=True)
    characters = list(bytes_to_unicode().values())
    tokens = characters + [c + "</w>" for c in characters] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def save_tiny_sam(folder: Path, image_size: int = 64, seed: int = 0) -> Path:
    """Save a random SAM small enough for a CPU test, with its processor, laid out like real weights."""
    import torch
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    width = 32
    config = SamConfig(
        vision_config=dict(hidden_size=width, output_channels=width, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=16, window_size=2, global_attn_indexes=[1],
                           num_pos_feats=width // 2, mlp_dim=2 * width),
        prompt_encoder_config=dict(hidden_size=width, image_size=image_size, patch_size=16),
        mask_decoder_config=dict(hidden_size=width, mlp_dim=2 * width, num_attention_heads=2,
                                 iou_head_hidden_dim=width),
    )
    torch.manual_seed(seed)
    SamModel(config).save_pretrained(folder)
    processor = SamImageProcessorPil(size={"longest_edge": image_size}, pad_size={"height": image_size,
                                                                                  "width": image_size})
    SamProcessor(image_processor=processor).save_pretrained(folder)
    return Path(folder)


def save_tiny_meta_sam(path: Path, seed: int = 0) -> Path:
    """A random segment-anything model small enough for a CPU test, saved as Meta saves its
    checkpoints (a state dict in a .pth), with its sizes in a JSON beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(TINY))
    script = ("import sys, json, torch; sys.path.insert(0, sys.argv[1]); from sam_meta_worker import build_sam; "
              "torch.manual_seed(int(sys.argv[4])); "
              "torch.save(build_sam(json.loads(sys.argv[2])).state_dict(), sys.argv[3])")
    subprocess.run([str(torchvision_python()), "-c", script, str(WORKER.parent), json.dumps(TINY), str(path),
                    str(seed)], check=True, capture_output=True)
    return path
