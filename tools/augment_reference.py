"""Writes reference outputs of the subnet's validator challenge pipeline for sv72's parity tests.

The subnet's `natix/utils/image_transforms.py` is read at run time from the local mirror (it is not
committed here) and executed with the same torchvision / OpenCV / Pillow / numpy the validators
use. Every random choice is fixed (angle, crop box, distortion levels, Gaussian noise), so the Rust
port can replay the exact parameters. Outputs go to tests/fixtures/augment/*.safetensors: each
file holds uint8/float32 tensors plus a JSON `params` string in the metadata.

    /root/.venvs/sv72tools/bin/python tools/augment_reference.py
"""

import io
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "fixtures" / "images"
OUT = ROOT / "tests" / "fixtures" / "augment"
MIRROR = "/work/.mirror/natixnetwork+streetvision-subnet/repo"


def load_subnet_module():
    """Imports the subnet's image_transforms module from the mirror without installing it."""
    src = subprocess.run(
        ["git", f"--git-dir={MIRROR}", "show", "HEAD:natix/utils/image_transforms.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # The module only needs TARGET_IMAGE_SIZE from the validator config.
    for name in ["natix", "natix.validator"]:
        sys.modules.setdefault(name, types.ModuleType(name))
    cfg = types.ModuleType("natix.validator.config")
    cfg.TARGET_IMAGE_SIZE = (224, 224)
    sys.modules["natix.validator.config"] = cfg
    mod = types.ModuleType("image_transforms")
    exec(compile(src, "image_transforms.py", "exec"), mod.__dict__)
    return mod


it = load_subnet_module()


def rgb(name):
    return Image.open(IMAGES / name).convert("RGB")


def small(name, w, h):
    """A small RGB uint8 input (stored in the fixture, so Rust never resamples it itself)."""
    return np.asarray(rgb(name).resize((w, h), Image.BILINEAR), dtype=np.uint8).copy()


def to_tensor(arr):
    return T.ToTensor()(Image.fromarray(arr))


def to_u8(t):
    """Exactly what ToPILImage does to a float tensor: (x * 255).astype(uint8)."""
    return (t.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def save(name, tensors, params):
    OUT.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_file(tensors, str(OUT / f"{name}.safetensors"), metadata={"params": json.dumps(params)})


def level0():
    cases = [("rgb_300x500.png", 224), ("rgba_257x199.png", 64), ("gray_180x240.png", 64), ("rgb_37x53.png", 64)]
    tensors, params = {}, []
    for i, (name, size) in enumerate(cases):
        img = Image.open(IMAGES / name)
        out = it.get_base_transforms((size, size))(img)
        tensors[f"out{i}"] = to_u8(out)
        params.append({"file": name, "size": size})
    save("level0", tensors, params)


def rotation():
    x = small("rgb_640x480.jpg", 64, 48)
    tensors, params = {"input": x}, []
    angles = [np.float32(-17.3), np.float32(5.5), np.float32(20.0), np.float32(-0.001)]
    for i, a in enumerate(angles):
        rot = it.RandomRotationWithParams(20, interpolation=T.InterpolationMode.BILINEAR)
        out = rot(to_tensor(x), angle=float(a))
        # NEAREST keeps input values, so uint8 holds the result exactly.
        tensors[f"out{i}"] = np.round(out.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        params.append({"angle": float(a)})
    save("rotation", tensors, params)


def rrc():
    x = small("rgb_300x500.png", 64, 48)
    tensors, params = {"input": x}, []
    cases = [((5, 7, 40, 40), 24), ((3, 2, 20, 20), 56), ((0, 0, 48, 48), 96), ((10, 30, 31, 31), 31), ((0, 0, 48, 48), 10), ((1, 3, 45, 45), 20)]
    for k, (box, size) in enumerate(cases):
        op = it.RandomResizedCropWithParams((size, size), scale=(0.2, 1.0), ratio=(1.0, 1.0))
        out = op(to_tensor(x), crop_params=box)
        tensors[f"out{k}"] = out.permute(1, 2, 0).numpy().astype(np.float32)
        params.append({"crop": list(box), "size": size})
    save("rrc", tensors, params)


def distortions():
    """DeeperForensics ops on uint8 BGR arrays, as the wrapper hands them over."""
    inputs = {"a": small("rgb_640x480.jpg", 48, 48), "b": small("rgb_300x500.png", 40, 46)}
    tensors, params = {}, []
    rng = np.random.default_rng(72)
    for key, x in inputs.items():
        tensors[f"input_{key}"] = x
        bgr = x[:, :, ::-1].copy()
        for op in ["CS", "CC", "JPEG", "GNC", "GB"]:
            for level in [1, 2, 3]:
                param = it.get_distortion_parameter(op, level)
                name = f"{key}_{op}_{level}"
                if op == "GNC":
                    noise = rng.standard_normal(bgr.shape).astype(np.float32)
                    tensors[f"noise_{name}"] = noise
                    orig = it.np.random.randn
                    it.np.random.randn = lambda *s, n=noise: n.astype(np.float64)
                    try:
                        out = it.gaussian_noise_color(bgr.copy(), param)
                    finally:
                        it.np.random.randn = orig
                else:
                    out = it.get_distortion_function(op)(bgr.copy(), param)
                tensors[name] = np.asarray(out, dtype=np.uint8)[:, :, ::-1].copy()
                params.append({"input": key, "op": op, "level": level, "param": param})
    save("distortions", tensors, params)


def pipeline():
    """Whole challenges with fixed parameters, through ToPILImage and the validator's JPEG."""
    cases = [
        # file, level, angle, crop (i, j, h, w), distortion levels CS CC JPEG GNC GB, size
        ("rgb_300x500.png", 1, 12.5, (40, 20, 200, 200), {}, 224),
        ("rgb_300x500.png", 3, -7.25, (100, 30, 150, 150), {"CS": 1, "CC": 2, "JPEG": 2, "GNC": 0, "GB": 1}, 112),
        ("rgba_257x199.png", 3, 3.0, (10, 12, 150, 150), {"CS": 2, "CC": 1, "JPEG": 1, "GNC": 2, "GB": 2}, 48),
        ("rgb_300x500.png", 2, 0.0, (0, 0, 300, 300), {"CS": 1, "CC": 1, "JPEG": 1}, 112),
    ]
    rng = np.random.default_rng(7)
    tensors, params = {}, []
    for k, (name, level, angle, box, dist, size) in enumerate(cases):
        x = it.ConvertToRGB()(Image.open(IMAGES / name))
        t = T.ToTensor()(x)
        t = it.RandomRotationWithParams(20, interpolation=T.InterpolationMode.BILINEAR)(t, angle=angle)
        t = it.RandomResizedCropWithParams((size, size), scale=(0.2, 1.0), ratio=(1.0, 1.0))(t, crop_params=box)
        # Flips never fire in the subnet (params pre-set to {}), so none here.
        for op in ["CS", "CC", "JPEG", "GNC", "GB"]:
            if op not in dist:
                continue
            lv = dist[op]
            if op == "GNC" and lv > 0:
                noise = rng.standard_normal((size, size, 3)).astype(np.float32)
                tensors[f"noise{k}"] = noise
                orig = it.np.random.randn
                it.np.random.randn = lambda *s, n=noise: n.astype(np.float64)
                try:
                    t = it.ApplyDeeperForensicsDistortion(op, 0, 2)(t, level=lv)
                finally:
                    it.np.random.randn = orig
            else:
                t = it.ApplyDeeperForensicsDistortion(op, 0, 2)(t, level=lv)
        pil = T.ToPILImage()(t)
        tensors[f"pre_jpeg{k}"] = np.asarray(pil, dtype=np.uint8)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG")
        jpeg = buf.getvalue()
        tensors[f"jpeg{k}"] = np.frombuffer(jpeg, dtype=np.uint8).copy()
        if k == 0:
            tensors[f"decoded{k}"] = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.uint8)
        params.append(
            {"file": name, "level": level, "angle": angle, "crop": list(box), "levels": dist, "size": size}
        )
    save("pipeline", tensors, params)


if __name__ == "__main__":
    torch.set_num_threads(1)
    level0()
    rotation()
    rrc()
    distortions()
    pipeline()
    total = sum(p.stat().st_size for p in OUT.glob("*.safetensors"))
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")
