"""Writes the tiny SigLIP 2 NaFlex test snapshots and reference outputs under tests/fixtures/backbones/.

* siglip2-tiny    a full `Siglip2Model` checkpoint (model_type `siglip2`, the layout of
                  google/siglip2-base-patch16-naflex): vision tower hidden 32, 4 heads, 2 layers,
                  intermediate 40, patch 8, num_patches 36 (a 6x6 position grid),
                  gelu_pytorch_tanh, MAP head; plus a tiny text tower that sv72 must not read.
* siglip2-vision  the same vision weights saved as a standalone `Siglip2VisionModel`
                  (model_type `siglip2_vision_model`); it must reproduce siglip2-tiny's outputs.

Every parameter is perturbed away from its init value so a forgotten bias or norm shows up.

Inputs: four images of two orientations: the three PNGs of tests/fixtures/images/ (PIL, RGB) and
rgb_300x500.png rotated 90 degrees clockwise (PIL ROTATE_270, lossless: 500 wide, 300 high), through
the checkpoint's own `Siglip2ImageProcessor` as `AutoImageProcessor` gives it (transformers 5.x:
the torchvision backend; antialiased bilinear resize on uint8 to the largest patch grid that fits
`max_num_patches`, one fused rescale + normalise, patchify as (row, col, channel), pad) at two
`max_num_patches` (24 and 48). As for SigLIP, `pixel_values = (u8 - 127.5) / 127.5` exactly, so
the fixture stores the uint8 patches (`siglip2-inputs/patches_u8_<M>.safetensors`, padding 0,
with `pixel_attention_mask` and `spatial_shapes`; asserted to reproduce the processor's float
output to 1e-6) and the references are computed from the processor's own tensors.

References (`siglip2-tiny/reference_<M>.safetensors`): `last_hidden_state` [N, M, D]
(post_layernorm; rows past an image's patch count are padding and carry no meaning),
`pooler_output` (the masked MAP head) and `patch_mean` (mean over the valid patch tokens only).

torchvision must be importable (transformers falls back to the PIL backend without it). With
a torch that has no matching torchvision release, `pip install --no-deps --target DIR
torchvision` and `PYTHONPATH=DIR` work: only its tensor resize is used.

    PYTHONPATH=/tmp/tvlib /work/venvs/perf/bin/python tools/backbone_fixtures_siglip2.py
"""

import json
import shutil
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, Siglip2Config, Siglip2Model, Siglip2VisionModel

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "fixtures" / "images"
OUT = ROOT / "tests" / "fixtures" / "backbones"
MAX_PATCHES = [24, 48]
# (file, rotate clockwise by 90 degrees)
INPUTS = [
    ("gray_180x240.png", False),
    ("rgb_300x500.png", False),
    ("rgb_300x500.png", True),
    ("rgb_37x53.png", False),
]

VISION = dict(
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_channels=3,
    num_patches=36,
    patch_size=8,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
)
TEXT = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=24,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=8,
    projection_size=16,
)

# What google/siglip2-base-patch16-naflex ships as preprocessor_config.json, at the fixture's
# patch size and max_num_patches.
PREPROCESSOR = {
    "do_convert_rgb": None,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "Siglip2ImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "max_num_patches": 24,
    "patch_size": 8,
    "processor_class": "Siglip2Processor",
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
}


def perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Adds N(0, s) with s in [0.02, 0.1] to every parameter, so nothing keeps its init value."""
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(model.named_parameters())):
            std = 0.02 + 0.08 * ((i * 37) % 11) / 10.0
            p.add_(torch.randn(p.shape, generator=gen) * std)


def outputs(vision: torch.nn.Module, batch: dict) -> dict:
    with torch.no_grad():
        out = vision(
            pixel_values=batch["pixel_values"],
            pixel_attention_mask=batch["pixel_attention_mask"],
            spatial_shapes=batch["spatial_shapes"],
        )
    hidden = out.last_hidden_state
    m = batch["pixel_attention_mask"].to(hidden.dtype)[..., None]
    return {
        "last_hidden_state": hidden,
        "pooler_output": out.pooler_output,
        "patch_mean": (hidden * m).sum(dim=1) / m.sum(dim=1),
    }


def load_images() -> list:
    out = []
    for name, rotate in INPUTS:
        img = Image.open(IMAGES / name).convert("RGB")
        if rotate:
            img = img.transpose(Image.Transpose.ROTATE_270)
        out.append(img)
    return out


def main() -> None:
    torch.manual_seed(5)
    config = Siglip2Config(vision_config=VISION, text_config=TEXT)
    model = Siglip2Model(config).eval()
    perturb(model, torch.Generator().manual_seed(2005))

    snap = OUT / "siglip2-tiny"
    vis = OUT / "siglip2-vision"
    inputs_dir = OUT / "siglip2-inputs"
    for d in (snap, vis, inputs_dir):
        if d.exists():
            shutil.rmtree(d)
    inputs_dir.mkdir(parents=True)
    model.save_pretrained(snap, safe_serialization=True)
    (snap / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    names = sorted(load_file(snap / "model.safetensors"))
    assert any(n.startswith("text_model.") for n in names), "the text tower must be in the file"

    reloaded = Siglip2Model.from_pretrained(snap, attn_implementation="eager").eval()
    for (ka, a), (kb, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert ka == kb and torch.equal(a, b), f"{ka} did not round-trip"
    vision = reloaded.vision_model

    standalone = Siglip2VisionModel(reloaded.config.vision_config).eval()
    standalone.load_state_dict(vision.state_dict())
    standalone.save_pretrained(vis, safe_serialization=True)
    shutil.copy(snap / "preprocessor_config.json", vis / "preprocessor_config.json")
    sv = Siglip2VisionModel.from_pretrained(vis, attn_implementation="eager").eval()

    processor = AutoImageProcessor.from_pretrained(snap)
    kind = type(processor).__name__
    assert kind == "Siglip2ImageProcessor", f"expected the torchvision backend, got {kind}"
    images = load_images()
    for m in MAX_PATCHES:
        batch = processor(images, max_num_patches=m, return_tensors="pt")
        pv, mask = batch["pixel_values"], batch["pixel_attention_mask"]
        shapes = batch["spatial_shapes"]
        assert pv.shape == (len(images), m, 3 * 8 * 8), pv.shape
        print(f"max_num_patches {m}: spatial_shapes {shapes.tolist()}")
        u = torch.round(pv * 127.5 + 127.5) * mask[..., None]
        assert u.min() >= 0 and u.max() <= 255
        u8 = u.to(torch.uint8)
        back = ((u8.to(torch.float32) - 127.5) / 127.5) * mask[..., None]
        err = float((back - pv).abs().max())
        assert err < 1e-6, err
        save_file(
            {
                "patches_u8": u8.contiguous(),
                "pixel_attention_mask": mask.to(torch.int32).contiguous(),
                "spatial_shapes": shapes.to(torch.int64).contiguous(),
            },
            inputs_dir / f"patches_u8_{m}.safetensors",
            metadata={"inputs": json.dumps(INPUTS), "max_abs_u8_roundtrip": f"{err:.3e}"},
        )
        ref = outputs(vision, batch)
        again = outputs(sv, batch)
        for k in ref:
            assert torch.equal(ref[k], again[k]), f"standalone vision model differs on {k}"
        save_file(
            {k: v.contiguous() for k, v in ref.items()},
            snap / f"reference_{m}.safetensors",
            metadata={"inputs": json.dumps(INPUTS)},
        )
    total = sum(f.stat().st_size for d in (snap, vis, inputs_dir) for f in d.iterdir())
    print(f"siglip2 fixtures: {total / 1e3:.0f} KB")


if __name__ == "__main__":
    main()
