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
"""

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


def perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Adds N(0, s) with s in [0.02, 0.1] to every parameter, so nothing keeps its init value."""
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(model.named_parameters())):
            std = 0.02 + 0.08 * ((i * 37) % 11) / 10.0
            p.add_(torch.randn(p.shape, generator=gen) * std)


def load_images() -> list[tuple[str, Image.Image]]:
    return [(p.name, Image.open(p).convert("RGB")) for p in sorted(IMAGES.iterdir())]


def main() -> None:
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
            with torch.no_grad():
                out = reloaded(pixel_values=pv32)
            hidden = out.last_hidden_state
            prefix = 1 + config.num_register_tokens
            ref = {
                "last_hidden_state": hidden,
                "pooler_output": out.pooler_output,
                "cls": hidden[:, 0, :],
                "patch_mean": hidden[:, prefix:, :].mean(dim=1),
            }
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
