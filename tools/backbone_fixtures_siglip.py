"""Writes the tiny SigLIP test snapshots and reference outputs under tests/fixtures/backbones/.

* siglip-tiny     a full `SiglipModel` checkpoint (model_type `siglip`, the layout of
                  google/siglip2-base-patch16-224 and the other fixed-resolution SigLIP 2 and
                  SigLIP checkpoints): vision tower hidden 32, 4 heads, 2 layers, intermediate 40,
                  patch 8, image_size 64 (an 8x8 position grid), gelu_pytorch_tanh, MAP head;
                  plus a tiny text tower (vocab 64, hidden 16, 1 layer) so that sv72's "read the
                  vision tensors only" path is exercised on a checkpoint that has both.
* siglip-vision   the same vision weights saved as a standalone `SiglipVisionModel`
                  (model_type `siglip_vision_model`, tensors without the `vision_model.` prefix);
                  no reference of its own: it must reproduce siglip-tiny's.

Every parameter is perturbed away from its init value so a forgotten bias or norm shows up.

Inputs: the three PNGs of tests/fixtures/images/ (PIL, converted to RGB) through the checkpoint's
own `SiglipImageProcessor` (torchvision backend, transformers 5.x default) with `size` overridden
to each test resolution. The processor's uint8 pipeline (antialiased resize on uint8, then one
fused rescale+normalise) makes `pixel_values = (u8 - 127.5) / 127.5` exactly, so the fixture
stores the uint8 image (`siglip-inputs/pixel_u8_<H>x<W>.safetensors`, asserted to reproduce the
processor's float output to 1e-6) and the reference outputs are computed from the processor's
own `pixel_values`.

Resolutions: 64x64 (the native grid: transformers adds the position table as it is) and 48x80
(non-square, `interpolate_pos_encoding=True`: the table resized bicubic to 6x10).

References (`<name>/reference_<H>x<W>.safetensors`): `last_hidden_state` (post_layernorm),
`pooler_output` (the MAP head) and `patch_mean` (mean of every token: SigLIP has no CLS).

    /work/venvs/compat-new/bin/python tools/backbone_fixtures_siglip.py
"""

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, SiglipConfig, SiglipModel, SiglipVisionModel

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "fixtures" / "images"
OUT = ROOT / "tests" / "fixtures" / "backbones"
RESOLUTIONS = [(64, 64), (48, 80)]
PNGS = ["gray_180x240.png", "rgb_300x500.png", "rgb_37x53.png"]

VISION = dict(
    hidden_size=32,
    intermediate_size=40,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_channels=3,
    image_size=64,
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
    projection_size=16,  # = hidden_size: transformers 4.45.2 has no projection_size and assumes it
)

# What google/siglip2-base-patch16-224 ships as preprocessor_config.json, at the fixture's size.
PREPROCESSOR = {
    "do_convert_rgb": None,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "SiglipProcessor",
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 64, "width": 64},
}


def perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Adds N(0, s) with s in [0.02, 0.1] to every parameter, so nothing keeps its init value."""
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(model.named_parameters())):
            std = 0.02 + 0.08 * ((i * 37) % 11) / 10.0
            p.add_(torch.randn(p.shape, generator=gen) * std)


def outputs(vision: torch.nn.Module, pv: torch.Tensor, interpolate: bool) -> dict:
    with torch.no_grad():
        out = vision(pixel_values=pv, interpolate_pos_encoding=interpolate)
    hidden = out.last_hidden_state
    return {
        "last_hidden_state": hidden,
        "pooler_output": out.pooler_output,
        "patch_mean": hidden.mean(dim=1),
    }


def main() -> None:
    torch.manual_seed(3)
    config = SiglipConfig(vision_config=VISION, text_config=TEXT)
    model = SiglipModel(config).eval()
    perturb(model, torch.Generator().manual_seed(1003))

    snap = OUT / "siglip-tiny"
    vis = OUT / "siglip-vision"
    inputs_dir = OUT / "siglip-inputs"
    for d in (snap, vis, inputs_dir):
        if d.exists():
            shutil.rmtree(d)
    inputs_dir.mkdir(parents=True)
    model.save_pretrained(snap, safe_serialization=True)
    (snap / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    names = sorted(load_file(snap / "model.safetensors"))
    assert any(n.startswith("text_model.") for n in names), "the text tower must be in the file"

    reloaded = SiglipModel.from_pretrained(snap, attn_implementation="eager").eval()
    for (ka, a), (kb, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert ka == kb and torch.equal(a, b), f"{ka} did not round-trip"
    vision = reloaded.vision_model

    # The standalone vision tower, as SiglipVisionModel.save_pretrained writes it.
    standalone = SiglipVisionModel(reloaded.config.vision_config).eval()
    standalone.load_state_dict(vision.state_dict())
    standalone.save_pretrained(vis, safe_serialization=True)
    shutil.copy(snap / "preprocessor_config.json", vis / "preprocessor_config.json")
    sv = SiglipVisionModel.from_pretrained(vis, attn_implementation="eager").eval()

    processor = AutoImageProcessor.from_pretrained(snap)
    print(type(processor).__name__, processor.backend if hasattr(processor, "backend") else "")
    images = [Image.open(IMAGES / n).convert("RGB") for n in PNGS]
    for h, w in RESOLUTIONS:
        pv = processor(images, size={"height": h, "width": w}, return_tensors="pt")["pixel_values"]
        assert pv.shape == (len(images), 3, h, w), pv.shape
        u = torch.round(pv * 127.5 + 127.5)
        assert u.min() >= 0 and u.max() <= 255
        u8 = u.to(torch.uint8)
        back = (u8.to(torch.float32) - 127.5) / 127.5
        err = float((back - pv).abs().max())
        assert err < 1e-6, err
        save_file(
            {"pixel_u8": u8.contiguous()},
            inputs_dir / f"pixel_u8_{h}x{w}.safetensors",
            metadata={"images": json.dumps(PNGS), "max_abs_u8_roundtrip": f"{err:.3e}"},
        )
        interpolate = (h, w) != (VISION["image_size"],) * 2
        ref = outputs(vision, pv, interpolate)
        again = outputs(sv, pv, interpolate)
        for k in ref:
            assert torch.equal(ref[k], again[k]), f"standalone vision model differs on {k}"
        save_file(
            {k: v.contiguous() for k, v in ref.items()},
            snap / f"reference_{h}x{w}.safetensors",
            metadata={"images": json.dumps(PNGS), "interpolate_pos_encoding": str(interpolate)},
        )
    total = sum(f.stat().st_size for d in (snap, vis, inputs_dir) for f in d.iterdir())
    print(f"siglip fixtures: {total / 1e3:.0f} KB")


if __name__ == "__main__":
    main()
