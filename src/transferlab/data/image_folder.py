"""Images from a folder with one subfolder per class (`root/<class>/<image>`), read with Pillow.

Class ids follow the sorted subfolder names. Every image is converted to `channels` (1 = grey,
3 = RGB) and resized to `image_size` (or must already share one size), then held in memory as
(C, H, W) floats in [0, 1] (normalized by the array datamodule). A separate `test_path` folder
is the test set; otherwise a fixed stratified `test_fraction` (`test_seed`) is held out.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.data.base import ArrayDataModule
from transferlab.data.splits import HeldOutTestSplit
from transferlab.data.user_files import describe, open_regular, require_folder
from transferlab.errors import ConfigError, UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def list_images(root: str | Path, key: str = "data.path") -> tuple[list[Path], np.ndarray, list[str]]:
    """(files, labels, class names) of a class-per-subfolder tree, in sorted order.

    An entry with an image's name that is not a regular file (a FIFO, a device, a broken symlink) is an
    error naming it, not an image silently left out.
    """
    p = require_folder(root, key, "a folder with one subfolder of images per class")
    names = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise UserError(f"{key}={str(root)!r}: no class subfolders (expected {key}/<class>/<image>)")
    files: list[Path] = []
    labels: list[int] = []
    for i, name in enumerate(names):
        found = []
        for f in sorted(f for f in (p / name).iterdir() if f.suffix.lower() in EXTENSIONS):
            what = describe(f)
            if what is None or not what.startswith("a regular file"):
                raise UserError(f"{key}={str(root)!r}: {name}/{f.name} is not a regular file but {what or 'gone'}; "
                                f"expected image files ({', '.join(EXTENSIONS)})")
            found.append(f)
        if not found:
            raise UserError(f"{key}={str(root)!r}: class folder {name!r} has no images ({', '.join(EXTENSIONS)})")
        files += found
        labels += [i] * len(found)
    return files, np.asarray(labels, dtype=np.int64), names


def load_images(files: Sequence[Path], channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """(N, C, H, W) float32 in [0, 1]; without `size` every image must have the first one's size.

    Pillow refuses images of more than twice its MAX_IMAGE_PIXELS (a decompression bomb) before decoding them.
    """
    try:
        from PIL import Image
    except ImportError:
        raise UserError("data=image_folder needs Pillow: pip install pillow") from None
    mode = {1: "L", 3: "RGB"}[channels]
    out = None
    for i, f in enumerate(files):
        try:
            with open_regular(f, "image", f"an image file ({', '.join(EXTENSIONS)})") as raw, Image.open(raw) as im:
                im = im.convert(mode)
                if size is not None:
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float32) / 255.0
        except (OSError, Image.DecompressionBombError) as e:  # UnidentifiedImageError and truncated data are OSErrors
            raise UserError(f"cannot read image {f}: {e}") from None
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        if out is None:
            out = np.empty((len(files), *a.shape), dtype=np.float32)
        elif a.shape != out.shape[1:]:
            raise ConfigError("data.image_size", None,
                              f"[H, W] to resize to: {f} is {a.shape[1]}x{a.shape[2]}, others {out.shape[2]}x{out.shape[3]}")
        out[i] = a
    assert out is not None
    return out


class ImageFolderDataModule(HeldOutTestSplit, ArrayDataModule):
    """Images of shape (channels, H, W) from `path` (and optionally `test_path`)."""

    modality = "image"

    def __init__(self, path: str | None = None, test_path: str | None = None, image_size: Sequence[int] | int | None = None,
                 channels: int = 3, **kwargs: Any):
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ConfigError("data.channels", channels, "1 (grey) or 3 (RGB)")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if image_size is not None and (len(image_size) != 2 or any(int(s) <= 0 for s in image_size)):
            raise ConfigError("data.image_size", list(image_size), "[H, W] (positive), a single size, or null")
        self.path, self.test_path = path, test_path
        self.image_size = tuple(int(s) for s in image_size) if image_size is not None else None
        self.channels = channels
        self._names: list[str] = []

    def load_arrays(self):
        if not self.path:
            raise ConfigError("data.path", self.path, "a folder with one subfolder of images per class")
        files, y, self._names = list_images(self.path)
        if self.test_path:
            test_files, y_test, test_names = list_images(self.test_path, "data.test_path")
            if test_names != self._names:
                raise UserError(f"data.test_path={self.test_path!r} has classes {test_names}, data.path has {self._names}")
            x = load_images(files, self.channels, self.image_size)
            return x, y, load_images(test_files, self.channels, self.image_size or tuple(x.shape[2:])), y_test
        x = load_images(files, self.channels, self.image_size)
        train, test = self.held_out_split(y)
        return x[train], y[train], x[test], y[test]

    def all_class_names(self) -> list[str]:
        return list(self._names)

    def preprocessing(self) -> dict:
        """Adds how a new image is read: grey or RGB, and resized to the training size (or required to have it)."""
        return {**super().preprocessing(), "channels": self.channels, "resize": self.image_size is not None}
