"""Writes the small committed test images under tests/fixtures/images/.

Different sizes, aspect ratios and modes (RGB JPEG, RGB PNG, RGBA PNG, greyscale PNG), with
structure at several scales so resampling differences show. Deterministic: re-running rewrites
identical files.

    python tools/make_fixture_images.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "images"


def pattern(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 120 * np.sin(x / (3 + seed) + y / 11.0)
    g = 255 * (x / max(w - 1, 1)) * (1 - y / max(h - 1, 1)) + 30 * np.cos(y / 2.5)
    b = 255 * ((x // 16 + y // 16) % 2) * 0.7 + 40
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (h, w, 3))
    # a few sharp-edged shapes (cones / signs stand-ins)
    for _ in range(4):
        cx, cy = rng.integers(0, w), rng.integers(0, h)
        rad = rng.integers(max(3, min(w, h) // 12), max(4, min(w, h) // 4))
        mask = (x - cx) ** 2 + (y - cy) ** 2 < rad**2
        img[mask] = rng.integers(0, 256, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    specs = [
        ("rgb_640x480.jpg", 640, 480, "RGB"),
        ("rgb_300x500.png", 300, 500, "RGB"),
        ("rgba_257x199.png", 257, 199, "RGBA"),
        ("gray_180x240.png", 180, 240, "L"),
        ("rgb_224x224.jpg", 224, 224, "RGB"),
        ("rgb_37x53.png", 37, 53, "RGB"),
    ]
    for i, (name, w, h, mode) in enumerate(specs):
        arr = pattern(w, h, seed=i + 1)
        img = Image.fromarray(arr, "RGB")
        if mode == "RGBA":
            alpha = (np.linspace(40, 255, w)[None, :].repeat(h, 0)).astype(np.uint8)
            img = Image.fromarray(np.dstack([arr, alpha]), "RGBA")
        elif mode == "L":
            img = img.convert("L")
        if name.endswith(".jpg"):
            img.save(OUT / name, quality=92)
        else:
            img.save(OUT / name, optimize=False)
    print(f"wrote {len(specs)} images to {OUT}")


if __name__ == "__main__":
    main()
