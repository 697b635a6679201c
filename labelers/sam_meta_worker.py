"""Masks from boxes with a Meta segment-anything checkpoint. Runs inside .venv-torchvision only.

    .venv-torchvision/bin/python labelers/sam_meta_worker.py JOB.json

segment-anything imports torchvision, which needs another torch than the project pins, so it runs
in its own environment (edgedistill/extras.py) and this script imports nothing from the project.
Job: {"checkpoint": .pth, "architecture": "vit_b" | "vit_l" | "vit_h" | {sizes}, "images":
[{"path": image, "boxes": [[x0, y0, x1, y1], ...]}], "out": .npz}; the .npz holds `masks_<i>`,
a boolean (boxes, height, width) array per image.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

# Meta's three released models (segment_anything/build_sam.py); a dict in the job gives other sizes
ARCHITECTURES = {
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": [2, 5, 8, 11]},
    "vit_l": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_attn_indexes": [5, 11, 17, 23]},
    "vit_h": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "global_attn_indexes": [7, 15, 23, 31]},
}
DEFAULTS = {"image_size": 1024, "prompt_dim": 256, "window_size": 14, "decoder_mlp_dim": 2048, "decoder_heads": 8}


def build_sam(architecture: str | dict):
    """An untrained Sam laid out as Meta's builder lays it out, for any of its sizes."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    sizes = {**DEFAULTS, **(ARCHITECTURES[architecture] if isinstance(architecture, str) else architecture)}
    image_size, prompt_dim, patch = sizes["image_size"], sizes["prompt_dim"], 16
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=sizes["depth"], embed_dim=sizes["embed_dim"], img_size=image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=sizes["num_heads"], patch_size=patch,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=sizes["global_attn_indexes"],
            window_size=sizes["window_size"], out_chans=prompt_dim),
        prompt_encoder=PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(image_size // patch,) * 2,
                                     input_image_size=(image_size, image_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=2, embedding_dim=prompt_dim, mlp_dim=sizes["decoder_mlp_dim"], num_heads=sizes["decoder_heads"]),
            transformer_dim=prompt_dim, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375])


def main(job_file: str) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from segment_anything import SamPredictor

    job = json.loads(Path(job_file).read_text())
    sam = build_sam(job["architecture"])
    sam.load_state_dict(torch.load(job["checkpoint"], map_location="cpu"))  # as Meta's builder loads it
    predictor = SamPredictor(sam.eval())
    masks = {}
    for index, item in enumerate(job["images"]):
        image = np.asarray(Image.open(item["path"]).convert("RGB"))
        boxes = torch.tensor(item["boxes"], dtype=torch.float32).reshape(-1, 4)
        if len(boxes) == 0:
            masks[f"masks_{index}"] = np.zeros((0, *image.shape[:2]), bool)
            continue
        predictor.set_image(image)
        with torch.inference_mode():
            found, _, _ = predictor.predict_torch(point_coords=None, point_labels=None, multimask_output=False,
                                                  boxes=predictor.transform.apply_boxes_torch(boxes, image.shape[:2]))
        masks[f"masks_{index}"] = found[:, 0].numpy().astype(bool)
    np.savez_compressed(job["out"], **masks)


if __name__ == "__main__":
    main(sys.argv[1])
