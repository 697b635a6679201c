"""Copy the real photos with no face that ship in scikit-image's wheel into DEST, for measuring false alarms.

    .venv/bin/python benchmarks/face_free_photos.py DEST
    .venv/bin/python benchmarks/detection.py --real ../shared/real-faces-dev --face-free DEST

The faces recipe trains on OpenCV's documentation images, so these photos are never trained on.
"""

from __future__ import annotations

import shutil
import sys
from importlib.metadata import files
from pathlib import Path

FACE_FREE = ("coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png", "coins.png",
             "clock_motion.png", "grass.png", "gravel.png", "brick.png", "hubble_deep_field.jpg", "moon.png")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    dest = Path(sys.argv[1])
    dest.mkdir(parents=True, exist_ok=True)
    copied = [shutil.copy(entry.locate(), dest / entry.name) for entry in files("scikit-image") if entry.name in FACE_FREE]
    print(f"{len(copied)} face-free photos in {dest}")


if __name__ == "__main__":
    main()
