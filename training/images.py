"""PNG grids of 28x28 images."""

from pathlib import Path

import numpy as np
from PIL import Image


def save_grid(images, cols: int, path, pad: int = 2) -> Path:
    """Writes images [N, 28, 28] in [0, 1] as a grid of `cols` columns, row-major."""
    images = np.asarray(images, np.float32)
    n, h, w = images.shape
    rows = -(-n // cols)
    grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top:top + h, left:left + w] = image
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8)).save(path)
    return path
