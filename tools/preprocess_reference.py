"""Writes reference `pixel_values` from transformers' AutoImageProcessor for the Rust parity tests.

For every image in tests/fixtures/images/ and every processor config in
tests/fixtures/preprocess/configs/<name>/preprocessor_config.json, runs
`AutoImageProcessor.from_pretrained(<config dir>)` (the default backend, which in transformers 5.x
is the torchvision one) on the image as PIL opens it, and stores the result in
tests/fixtures/preprocess/<image stem>.safetensors:

* `<config>` — the exact f32 `pixel_values` [3, H, W] for float pipelines (DINOv3: rescale, then
  a float resize), or
* `<config>.u8` — for uint8 pipelines (BiT / DINOv2: resize and crop on uint8, then one fused
  rescale+normalise) the uint8 image just before normalisation, recovered from `pixel_values`.
  The script asserts that re-normalising it reproduces transformers' `pixel_values` to 1e-6, so
  the fixture is 4x smaller with no loss of what it checks.
* Combinations transformers itself cannot process (RGBA with DINOv3's processor, which has no
  `do_convert_rgb`) have no entry.
* `decoded` — for JPEGs only, the RGB pixels PIL decoded (JPEG decoders may differ by a level).

    /root/.venvs/sv72tools/bin/python tools/preprocess_reference.py
"""

import json
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image, ImageOps
from safetensors.numpy import save_file
from transformers import AutoImageProcessor

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "fixtures" / "images"
OUT = ROOT / "tests" / "fixtures" / "preprocess"

# The DINOv2 recipe is the one the backbone fixtures ship (one definition for both scripts).
from backbone_fixtures import IMAGENET_MEAN, IMAGENET_STD, processor_config  # noqa: E402


def dinov3_config(size: int) -> dict:
    """`preprocessor_config.json` fields of the facebook/dinov3-* snapshots at `size`."""
    return {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": IMAGENET_MEAN,
        "image_processor_type": "DINOv3ViTImageProcessorFast",
        "image_std": IMAGENET_STD,
        "resample": 2,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": size, "width": size},
    }


# Shapes of the real facebook/dinov2-* and facebook/dinov3-* preprocessor_config.json files,
# at the real size and a smaller one.
CONFIGS = {
    "dinov2_224": processor_config((224, 224)),
    "dinov2_98": processor_config((98, 98)),
    "dinov3_224": dinov3_config(224),
    "dinov3_112": dinov3_config(112),
}


def main() -> None:
    torch.set_num_threads(1)
    procs = {}
    for name, cfg in CONFIGS.items():
        d = OUT / "configs" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        procs[name] = AutoImageProcessor.from_pretrained(d)
        print(name, type(procs[name]).__name__, procs[name].backend)
    for path in sorted(IMAGES.iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        # What transformers' image-classification pipeline hands the processor (load_image:
        # exif_transpose, then convert("RGB"): alpha dropped), sv72's one decode rule.
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        tensors = {}
        if path.suffix.lower() in (".jpg", ".jpeg"):
            tensors["decoded"] = np.ascontiguousarray(np.array(img.convert("RGB"), dtype=np.uint8))
        for name, proc in procs.items():
            try:
                pv = proc(images=img, return_tensors="pt")["pixel_values"][0]
            except RuntimeError as e:  # kept for processors that reject an input
                print(f"  {path.name} x {name}: transformers fails ({e}); no reference")
                continue
            pv = pv.numpy().astype(np.float32)
            cfg = CONFIGS[name]
            if cfg["image_processor_type"].startswith("Bit"):
                mean = np.array(cfg["image_mean"], dtype=np.float32)[:, None, None]
                std = np.array(cfg["image_std"], dtype=np.float32)[:, None, None]
                u = np.rint(pv * std * 255.0 + mean * 255.0)
                assert u.min() >= 0 and u.max() <= 255, (path, name)
                u8 = u.astype(np.uint8)
                back = (u8.astype(np.float32) - mean * 255.0) / (std * 255.0)
                err = float(np.abs(back - pv).max())
                assert err < 1e-6, (path, name, err)
                tensors[f"{name}.u8"] = np.ascontiguousarray(u8)
            else:
                tensors[name] = np.ascontiguousarray(pv)
        save_file(tensors, str(OUT / f"{path.stem}.safetensors"),
                  metadata={"transformers": transformers.__version__, "torch": torch.__version__})
        print("wrote", path.stem, {k: v.shape for k, v in tensors.items()})


if __name__ == "__main__":
    main()
