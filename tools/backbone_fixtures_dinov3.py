"""Writes the tiny DINOv3 test snapshots and reference outputs under tests/fixtures/backbones/.

Two randomly initialised `transformers` DINOv3ViTModel snapshots with odd sizes, every parameter
(layer scales and register tokens included) perturbed away from its init value so that a
forgotten bias, layer scale or norm shows up in the outputs:

* dinov3-tiny   hidden 48, 4 heads (head_dim 12), 2 layers, intermediate 80, plain GELU MLP,
                default bias flags (q, v, proj, mlp with bias; k without), rope_theta 37,
                layer_norm_eps 1e-6, layerscale init 0.5; tensor names rewritten to the
                in-memory layout of transformers 5 (`model.layer.N.*`), which transformers
                also loads.
* dinov3-gated  hidden 64, 4 heads (head_dim 16), 3 layers, intermediate 96, gated SiLU MLP
                (the H+/7B layout), flipped bias flags (no query bias, key bias, no mlp bias),
                rope_theta 100; tensor names as `save_pretrained` writes them, which is the
                published checkpoints' layout (`layer.N.*`), so both namings are exercised.

Inputs: the six images of tests/fixtures/images/, opened with PIL and converted to RGB, then run
through the DINOv3 image processor loaded from the snapshot's hand-written
preprocessor_config.json (the published checkpoints' settings: rescale 1/255, bilinear antialiased
resize, ImageNet mean/std) with `size` overridden to each test resolution. The processor output is
rounded to float16 (to keep the fixtures small) and stored once, shared by both models, in
dinov3-inputs/pixel_values_<H>x<W>.safetensors; the reference outputs are computed by running
the model (float32, eager attention, eval mode) on exactly those rounded values upcast to float32.

Resolutions: 112x112 (square, 7x7 patches) and 80x128 (non-square, 5x8 patches, catches a
swapped RoPE y/x grid).

    /root/.venvs/sv72tools/bin/python tools/backbone_fixtures_dinov3.py

`--full DIR --preset NAME` instead writes one full-size random snapshot with a published
architecture (not committed; tens of MB) plus DIR/reference_224x224.safetensors holding the
processor's float32 pixel_values at 224x224 and the outputs, for the opt-in Rust test
`SV72_DINOV3_FULL=DIR cargo test --test main backbones:: -- --ignored full_size`.
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, DINOv3ViTConfig, DINOv3ViTModel

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "fixtures" / "images"
OUT = ROOT / "tests" / "fixtures" / "backbones"
RESOLUTIONS = [(112, 112), (80, 128)]

# What the published facebook/dinov3-* snapshots ship as preprocessor_config.json.
PREPROCESSOR = {
    "crop_size": None,
    "data_format": "channels_first",
    "default_to_square": True,
    "device": None,
    "do_center_crop": None,
    "do_convert_rgb": None,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "DINOv3ViTImageProcessorFast",
    "image_std": [0.229, 0.224, 0.225],
    "input_data_format": None,
    "resample": 2,
    "rescale_factor": 0.00392156862745098,
    "return_tensors": None,
    "size": {"height": 224, "width": 224},
}

MODELS = {
    "dinov3-tiny": dict(
        seed=1,
        rename_layers=True,
        config=dict(
            hidden_size=48,
            num_attention_heads=4,
            num_hidden_layers=2,
            intermediate_size=80,
            num_register_tokens=4,
            hidden_act="gelu",
            use_gated_mlp=False,
            rope_theta=37.0,
            layer_norm_eps=1e-6,
            layerscale_value=0.5,
        ),
    ),
    "dinov3-gated": dict(
        seed=2,
        rename_layers=False,
        config=dict(
            hidden_size=64,
            num_attention_heads=4,
            num_hidden_layers=3,
            intermediate_size=96,
            num_register_tokens=4,
            hidden_act="silu",
            use_gated_mlp=True,
            query_bias=False,
            key_bias=True,
            value_bias=True,
            proj_bias=True,
            mlp_bias=False,
            rope_theta=100.0,
            layerscale_value=1.0,
        ),
    ),
}


# Published facebook/dinov3-* ViT architectures (config.json fields that differ from the defaults).
PRESETS = {
    "vits16": dict(hidden_size=384, intermediate_size=1536, num_attention_heads=6, num_hidden_layers=12),
    "vits16plus": dict(
        hidden_size=384,
        intermediate_size=1536,
        num_attention_heads=6,
        num_hidden_layers=12,
        use_gated_mlp=True,
        hidden_act="silu",
    ),
    "vitb16": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
    "vitl16": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24),
    "vith16plus": dict(
        hidden_size=1280,
        intermediate_size=5120,
        num_attention_heads=20,
        num_hidden_layers=32,
        use_gated_mlp=True,
        hidden_act="silu",
    ),
}


def perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Adds N(0, s) with s in [0.02, 0.1] to every parameter, so nothing keeps its init value."""
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(model.named_parameters())):
            std = 0.02 + 0.08 * ((i * 37) % 11) / 10.0
            p.add_(torch.randn(p.shape, generator=gen) * std)


def load_images() -> list[tuple[str, Image.Image]]:
    return [(p.name, Image.open(p).convert("RGB")) for p in sorted(IMAGES.iterdir())]


def outputs(model: DINOv3ViTModel, pv: torch.Tensor, prefix: int) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(pixel_values=pv)
    hidden = out.last_hidden_state
    return {
        "last_hidden_state": hidden,
        "pooler_output": out.pooler_output,
        "cls": hidden[:, 0, :],
        "patch_mean": hidden[:, prefix:, :].mean(dim=1),
    }


def write_full(out: Path, preset: str) -> None:
    torch.manual_seed(7)
    config = DINOv3ViTConfig(num_register_tokens=4, layerscale_value=1e-5, **PRESETS[preset])
    model = DINOv3ViTModel(config).eval()
    perturb(model, torch.Generator().manual_seed(7))
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(out, safe_serialization=True)
    (out / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    model = DINOv3ViTModel.from_pretrained(out, attn_implementation="eager").eval()
    processor = AutoImageProcessor.from_pretrained(out)
    images = load_images()
    pv = processor([im for _, im in images], return_tensors="pt")["pixel_values"]
    ref = outputs(model, pv, 1 + config.num_register_tokens)
    ref["pixel_values"] = pv
    save_file({k: v.contiguous() for k, v in ref.items()}, out / "reference_224x224.safetensors")
    print(f"{preset}: wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", type=Path, help="write one full-size snapshot here instead")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="vits16")
    args = ap.parse_args()
    if args.full:
        write_full(args.full, args.preset)
        return

    OUT.mkdir(parents=True, exist_ok=True)
    images = load_images()
    names = [n for n, _ in images]

    inputs_dir = OUT / "dinov3-inputs"
    if inputs_dir.exists():
        shutil.rmtree(inputs_dir)
    inputs_dir.mkdir()

    pixels: dict[tuple[int, int], torch.Tensor] = {}
    for name, spec in MODELS.items():
        torch.manual_seed(spec["seed"])
        gen = torch.Generator().manual_seed(1000 + spec["seed"])
        config = DINOv3ViTConfig(**spec["config"])
        model = DINOv3ViTModel(config).eval()
        perturb(model, gen)

        snap = OUT / name
        if snap.exists():
            shutil.rmtree(snap)
        model.save_pretrained(snap, safe_serialization=True)
        (snap / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
        if spec["rename_layers"]:
            st = snap / "model.safetensors"
            tensors = load_file(st)
            renamed = {
                (f"model.{k}" if k.startswith("layer.") else k): v.contiguous()
                for k, v in tensors.items()
            }
            save_file(renamed, st, metadata={"format": "pt"})
        # The snapshot must load back in transformers with identical parameters.
        reloaded = DINOv3ViTModel.from_pretrained(snap, attn_implementation="eager").eval()
        for (ka, a), (kb, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
            assert ka == kb and torch.equal(a, b), f"{name}: {ka} did not round-trip"

        processor = AutoImageProcessor.from_pretrained(snap)
        for h, w in RESOLUTIONS:
            if (h, w) not in pixels:
                pv = processor(
                    [im for _, im in images], size={"height": h, "width": w}, return_tensors="pt"
                )["pixel_values"]
                assert pv.shape == (len(images), 3, h, w), pv.shape
                pixels[(h, w)] = pv.to(torch.float16)
                save_file(
                    {"pixel_values": pixels[(h, w)].contiguous()},
                    inputs_dir / f"pixel_values_{h}x{w}.safetensors",
                    metadata={"images": json.dumps(names)},
                )
            pv32 = pixels[(h, w)].to(torch.float32)
            ref = outputs(reloaded, pv32, 1 + config.num_register_tokens)
            save_file(
                {k: v.contiguous() for k, v in ref.items()},
                snap / f"reference_{h}x{w}.safetensors",
                metadata={"images": json.dumps(names)},
            )
        print(name, len(load_file(snap / "model.safetensors")), "tensors")

    total = sum(f.stat().st_size for f in OUT.rglob("dinov3*/*") if f.is_file())
    print(f"dinov3 fixtures: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
