"""Meta's segment-anything checkpoints (.pth) as a segmenter, run in the torchvision environment.

`autolabel.sam_model: /models/sam_vit_b_01ec64.pth` takes this path instead of transformers' SAM.
The architecture comes from the file name (vit_b, vit_l, vit_h, as Meta names them) or from a
JSON file beside it with other sizes (tests/tiny_models.py writes one for offline tests). Each
batch of images goes to labelers/sam_meta_worker.py as PNG files and comes back as boolean masks.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgedistill.errors import EdgedistillError
from edgedistill.extras import run_worker
from edgedistill.images import image_bytes

WORKER = Path(__file__).with_name("sam_meta_worker.py")

@dataclass(frozen=True)
class MetaSamSegmenter:
    checkpoint: Path
    architecture: str | dict
    model_id: str

    def segment(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """For each image, one boolean mask (n, height, width) per box (n, 4) in x0, y0, x1, y1 pixels."""
        with tempfile.TemporaryDirectory(prefix="edgedistill-sam-") as folder:
            folder = Path(folder)
            items = []
            for index, (image, image_boxes) in enumerate(zip(images, boxes)):
                (folder / f"{index}.png").write_bytes(image_bytes(image[..., :3]))
                items.append({"path": str(folder / f"{index}.png"),
                              "boxes": np.asarray(image_boxes, np.float64).reshape(-1, 4).tolist()})
            job = {"checkpoint": str(self.checkpoint), "architecture": self.architecture, "images": items,
                   "out": str(folder / "masks.npz")}
            run_worker(WORKER, job, folder / "job.json", f"Segment Anything ({self.checkpoint.name})",
                       "check that autolabel.sam_model is one of Meta's segment-anything checkpoints and that its "
                       "file name says vit_b, vit_l or vit_h")
            with np.load(folder / "masks.npz") as found:
                return [found[f"masks_{index}"] for index in range(len(images))]


def load_meta_sam(checkpoint: str) -> MetaSamSegmenter:
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise EdgedistillError(f"the Segment Anything checkpoint {path} does not exist",
                               "download one of Meta's checkpoints (e.g. sam_vit_b_01ec64.pth) and give its path "
                               "in autolabel.sam_model")
    sizes = path.with_suffix(".json")
    named = re.search(r"vit_[blh]", path.name)
    if sizes.is_file():
        architecture: str | dict = json.loads(sizes.read_text())
    elif named:
        architecture = named.group(0)
    else:
        raise EdgedistillError(f"cannot tell which Segment Anything model {path.name} is",
                               "keep Meta's file name (sam_vit_b_..., sam_vit_l_..., sam_vit_h_...) or put a JSON "
                               f"with its sizes beside it as {sizes.name}")
    return MetaSamSegmenter(path.resolve(), architecture, f"meta-sam/{path.name}")
