"""Fixture images for sv72's decoder (`src/data/decode.rs`, tests/decode.rs) and the pixels the
subnet miner's pipeline gets from them.

Writes small JPEGs of every kind Pillow meets (baseline 4:2:0 as `Image.save(format="JPEG")`
writes it, 4:4:4, 4:2:2, progressive, optimised Huffman, odd sizes, grey, CMYK with a real K
channel, EXIF orientations) and PNGs (RGBA, LA, grey, 16-bit grey, palette with transparency,
EXIF-rotated) into tests/fixtures/decode/, and `expected.safetensors`: for each file, the uint8
HxWx3 array of `ImageOps.exif_transpose(Image.open(f)).convert("RGB")`, which is what
transformers' image-classification pipeline (4.45.2 and 5.x) hands the image processor.

Run with the subnet's pillow (10.4.0, poetry.lock) from the repository root:
    python tools/decode_fixtures.py            # write
    python tools/decode_fixtures.py --check    # compare this Pillow's decode with the files
"""
import argparse
import io
import json
import os
import sys

import numpy as np
from PIL import Image, ImageOps, features
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "decode")


def scene(h, w, seed):
    """A photo-like test card: gradients, edges, noise (so chroma subsampling matters)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(w - 1, 1)) ^ ((y // 6) * 40 % 256)
    g = (y * 255 // max(h - 1, 1))
    b = ((x + y) * 3) % 256
    img = np.stack([r, g, b], -1).astype(np.int32)
    img[h // 3: h // 2, w // 4: 3 * w // 4] = [230, 60, 20]  # a saturated block: chroma edges
    img += rng.integers(-25, 26, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def exif_with_orientation(o):
    ex = Image.Exif()
    ex[0x0112] = o
    return ex.tobytes()


def files():
    rgb = Image.fromarray(scene(40, 56, 1), "RGB")
    odd = Image.fromarray(scene(23, 37, 2), "RGB")
    out = {}

    def jpeg(name, im, **kw):
        b = io.BytesIO()
        im.save(b, format="JPEG", **kw)
        out[name] = b.getvalue()

    def png(name, im, **kw):
        b = io.BytesIO()
        im.save(b, format="PNG", **kw)
        out[name] = b.getvalue()

    jpeg("baseline_420.jpg", rgb)  # what validators send: Pillow's defaults
    jpeg("odd_420.jpg", odd)
    jpeg("q95_444.jpg", rgb, quality=95, subsampling=0)
    jpeg("q75_422.jpg", rgb, subsampling=1)
    jpeg("progressive.jpg", rgb, progressive=True)
    jpeg("optimized.jpg", odd, optimize=True)
    jpeg("grey.jpg", rgb.convert("L"))
    cmyk = np.concatenate([scene(40, 56, 3), scene(40, 56, 4)[..., :1]], -1)
    jpeg("cmyk.jpg", Image.fromarray(cmyk, "CMYK"))
    for o in (3, 6, 8):
        jpeg(f"exif_orientation_{o}.jpg", odd, exif=exif_with_orientation(o))
    rgba = np.concatenate([scene(40, 56, 5), scene(40, 56, 6)[..., :1]], -1)
    png("rgba.png", Image.fromarray(rgba, "RGBA"))
    png("la.png", Image.fromarray(rgba[..., [0, 3]], "LA"))
    png("grey.png", rgb.convert("L"))
    g16 = (scene(40, 56, 7)[..., 0].astype(np.uint16) * 3)
    png("grey16.png", Image.fromarray(g16, "I;16"))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    png("palette_trns.png", pal, transparency=3)
    png("exif_orientation_6.png", odd, exif=exif_with_orientation(6))
    return out


def expected(data):
    im = Image.open(io.BytesIO(data))
    return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    print(f"pillow {Image.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}")
    if a.check:
        want = load_file(os.path.join(OUT, "expected.safetensors"))
        bad = 0
        for name, arr in sorted(want.items()):
            with open(os.path.join(OUT, name), "rb") as f:
                got = expected(f.read())
            same = got.shape == arr.shape and (got == arr).all()
            bad += not same
            print(f"  {name}: {'same' if same else 'DIFFERENT'}")
        return 1 if bad else 0
    os.makedirs(OUT, exist_ok=True)
    tensors = {}
    for name, data in files().items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        tensors[name] = expected(data)
    save_file(tensors, os.path.join(OUT, "expected.safetensors"),
              metadata={"pillow": Image.__version__, "libjpeg_turbo": str(features.version("libjpeg_turbo"))})
    print(json.dumps({k: list(v.shape) for k, v in tensors.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
