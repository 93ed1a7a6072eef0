"""Arrays and images of a user's: a ``.npz`` file (x, y) and a folder of images with one sub-folder per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays ``x`` (or scikit-learn's ``X``) and ``y`` of a user's ``.npz``, or its two unnamed arrays
    (``np.savez(path, x, y)``: ``arr_0``, ``arr_1``) in that order; uint8 images are scaled to [0, 1]."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = next(
                (pair for pair in (("x", "y"), ("X", "y"), ("arr_0", "arr_1")) if set(pair) <= set(data.files)),
                None,
            )
            if names is None or (names[0] == "arr_0" and len(data.files) != 2):
                raise ValueError(
                    f"{path} holds arrays {data.files}; it needs one named 'x' (or 'X') and one named 'y', or exactly "
                    "two unnamed ones, features first: np.savez(path, x=x, y=y)"
                )
            x, y = data[names[0]], data[names[1]]
    except (OSError, EOFError, ValueError) as e:
        if "needs one named" in str(e):
            raise
        if "Object arrays" in str(e):  # pandas' to_numpy() of a text column; loading it would unpickle
            raise ValueError(
                f"{path} holds an array of Python objects (as pandas gives for text), which is not loaded; save "
                "labels as strings, np.savez(path, x=x, y=y.astype(str)), and features as numbers"
            ) from e
        raise ValueError(f"{path} cannot be read as a .npz file ({e})") from e
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]  # (N, H, W) grey images
    return x, y


def load_image_folder(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images in ``path/<class name>/*`` and their class names (the sub-folders'); all of one size and mode."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d for d in path.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"image folder {path} has no sub-folders; put each class's images in a sub-folder")
    images, labels, size, mode = [], [], None, None
    for folder in classes:
        for file in sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(file) as img:
                    img.load()
            except (OSError, UnidentifiedImageError) as e:
                raise ValueError(f"image {file} cannot be read ({e})") from e
            if size is None:
                size, mode = img.size, ("L" if img.mode in ("L", "1", "P") else "RGB")
            if img.size != size:
                raise ValueError(
                    f"image {file} is {img.size[0]}x{img.size[1]}, the others {size[0]}x{size[1]}; "
                    "resize them to one size"
                )
            array = np.asarray(img.convert(mode), dtype=np.float32) / 255.0
            images.append(array if array.ndim == 3 else array[..., None])
            labels.append(folder.name)
    if not images:
        raise ValueError(f"image folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return np.stack(images), np.array(labels)
