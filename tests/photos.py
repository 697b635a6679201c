"""Real photos for tests: the ones that ship in scikit-image's wheel."""

import shutil
from importlib.metadata import files
from pathlib import Path

FACES = ("astronaut.png", "camera.png")  # the others hold no face
OTHERS = ("coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "coins.png")


def real_photos(folder: Path, names: tuple[str, ...] = FACES + OTHERS) -> Path:
    """Copy the named photos into a new `folder`."""
    folder.mkdir()
    for entry in files("scikit-image"):
        if entry.name in names:
            shutil.copy(entry.locate(), folder / entry.name)
    return folder
