"""What an image source yields, written down once: the models, the grids, the judge and
the exports read it, so no module but a dataset's own knows a size.

Shapes: images travel as uint8 [B, H, W, C] (C = 1 grey, 3 RGB), pixel levels 0-255.
"""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """An image dataset's shape (H, W, C), its classes' names and its pixel levels (the
    distinct values a stored pixel takes: 256 for 8-bit images, 17 for scikit-learn's
    digits, stored scaled to 0-255)."""

    shape: tuple[int, int, int]
    classes: tuple[str, ...]
    levels: int = 256

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if len(self.shape) != 3 or min(self.shape) < 1 or self.shape[2] not in (1, 3):
            raise ValueError(f"an image shape is (H, W, C) with C 1 or 3, got {self.shape}")

    @property
    def pixels(self) -> int:
        """Values per image, H * W * C (the 'dims' of bits per dim)."""
        return math.prod(self.shape)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        h, w, c = self.shape
        return f"{h}x{w} {'grey' if c == 1 else 'RGB'}, {self.num_classes} classes"
