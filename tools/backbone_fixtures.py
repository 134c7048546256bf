"""Writes tiny backbone snapshots and their `transformers` reference outputs for the Rust parity tests.

    /root/.venvs/sv72tools/bin/python tools/backbone_fixtures.py            # every family
    /root/.venvs/sv72tools/bin/python tools/backbone_fixtures.py dinov2_s36 # one fixture

Layout under tests/fixtures/backbones/:

* `inputs_<res>.safetensors` (shared by every model): `pixel_u8` `[N, 3, res, res]` uint8, the
  output of `transformers`' `BitImageProcessor` (resize shortest edge to `res * 256 / 224`, bicubic,
  center crop `res`) with rescale and normalisation switched off, for every image of
  tests/fixtures/images/ in sorted file-name order; plus `mean` and `std` (f32, ImageNet).
  The model input is `pixel_values = (float32(pixel_u8) / 255 - mean) / std`, computed in float32
  exactly like that (see `pixel_values_from_u8`), so the Rust side rebuilds bit-identical inputs.
  uint8 keeps the fixtures small (a 224 f32 batch alone would be 3.6 MB). The metadata records the
  image names and the max |difference| to the processor's own normalised output (float rounding).
* `<name>/` an HF snapshot (`config.json`, `model.safetensors`, `preprocessor_config.json`) of a
  tiny randomly initialised model whose every parameter is perturbed away from its init values.
* `<name>/reference_<res>.safetensors`: `last_hidden_state`, `pooler_output`, `cls`, `patch_mean`
  (mean of the patch tokens only: no CLS, no registers) from the `transformers` model in float32.

Other families (e.g. DINOv3) add builders to `BUILDERS` from their own module and reuse
`write_inputs`, `pixel_values_from_u8`, `write_snapshot` and `write_reference`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "tests" / "fixtures" / "images"
OUT = ROOT / "tests" / "fixtures" / "backbones"
# (height, width) of the model inputs; both differ from every fixture's position-embedding grid.
RESOLUTIONS = ((224, 224), (98, 98), (70, 112))
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def image_names() -> list[str]:
    return sorted(p.name for p in IMAGES.iterdir() if p.suffix in {".png", ".jpg", ".jpeg"})


def res_key(res: tuple[int, int]) -> str:
    """`224` for a square input, `70x112` (height x width) otherwise."""
    h, w = res
    return str(h) if h == w else f"{h}x{w}"


def processor_config(res: tuple[int, int] = (224, 224)) -> dict:
    """`preprocessor_config.json` as the facebook/dinov2-* snapshots ship it (BitImageProcessor)."""
    return {
        "crop_size": {"height": res[0], "width": res[1]},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": IMAGENET_MEAN,
        "image_processor_type": "BitImageProcessor",
        "image_std": IMAGENET_STD,
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": max(res) * 256 // 224},
    }


def pixel_values_from_u8(pixel_u8: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The model input, float32 op by op (the Rust tests repeat exactly these operations)."""
    x = pixel_u8.astype(np.float32) / np.float32(255.0)
    return (x - mean.reshape(1, 3, 1, 1)) / std.reshape(1, 3, 1, 1)


def write_inputs(res: tuple[int, int]) -> Path:
    """Writes `inputs_<res>.safetensors` (uint8 crops + mean/std) and returns its path."""
    from transformers import BitImageProcessor

    cfg = processor_config(res)
    cfg.pop("image_processor_type")
    proc = BitImageProcessor(**cfg)
    names = image_names()
    images = [Image.open(IMAGES / n) for n in names]
    raw = proc(images, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
    raw = raw.numpy()
    if not np.array_equal(raw, np.round(raw)) or raw.min() < 0 or raw.max() > 255:
        raise SystemExit("processor output without rescale is not integral uint8")
    pixel_u8 = raw.astype(np.uint8)
    mean = np.array(IMAGENET_MEAN, dtype=np.float32)
    std = np.array(IMAGENET_STD, dtype=np.float32)
    full = proc(images, return_tensors="pt")["pixel_values"].numpy()
    ours = pixel_values_from_u8(pixel_u8, mean, std)
    diff = float(np.abs(full - ours).max())
    path = OUT / f"inputs_{res_key(res)}.safetensors"
    meta = {
        "images": json.dumps(names),
        "made_by": f"BitImageProcessor(shortest_edge={max(res) * 256 // 224}, bicubic, "
        f"center crop {res[0]}x{res[1]}), "
        "rescale/normalize off; pixel_values = (f32(pixel_u8) / 255 - mean) / std in f32",
        "max_abs_diff_vs_processor_pixel_values": f"{diff:.3e}",
    }
    save_file({"pixel_u8": pixel_u8, "mean": mean, "std": std}, str(path), metadata=meta)
    print(f"{path.relative_to(ROOT)}: {pixel_u8.shape}, |processor - ours| = {diff:.2e}")
    return path


def load_inputs(res: tuple[int, int]) -> torch.Tensor:
    t = load_file(str(OUT / f"inputs_{res_key(res)}.safetensors"))
    return torch.from_numpy(pixel_values_from_u8(t["pixel_u8"], t["mean"], t["std"]))


def perturb_(model: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Moves every parameter off its init value (zeros, ones, layer-scale constants)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g) * scale)


def write_snapshot(model, name: str) -> Path:
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    (d / "preprocessor_config.json").write_text(json.dumps(processor_config(), indent=2) + "\n")
    return d


def write_reference(
    model,
    name: str,
    res: tuple[int, int],
    num_prefix_tokens: int,
    extra: Callable[[object], dict[str, np.ndarray]] | None = None,
) -> None:
    """Runs `model` on `inputs_<res>` and saves the outputs the Rust side compares against."""
    pixel_values = load_inputs(res)
    with torch.no_grad():
        out = model(pixel_values=pixel_values)
    lhs = out.last_hidden_state
    tensors = {
        "last_hidden_state": lhs.numpy(),
        "pooler_output": out.pooler_output.numpy(),
        "cls": lhs[:, 0].numpy(),
        "patch_mean": lhs[:, num_prefix_tokens:].mean(dim=1).numpy(),
    }
    if extra:
        tensors.update(extra(out))
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    meta = {"inputs": f"inputs_{res_key(res)}.safetensors", "transformers": __import__("transformers").__version__}
    save_file(tensors, str(OUT / name / f"reference_{res_key(res)}.safetensors"), metadata=meta)
    print(f"  {name} @ {res_key(res)}: last_hidden_state {tuple(lhs.shape)}")


# ---------------------------------------------------------------- DINOv2 family


def _dinov2(seed: int, registers: bool, **cfg):
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(seed)
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**cfg))
    else:
        model = Dinov2Model(Dinov2Config(**cfg))
    perturb_(model, seed + 1000)
    return model.eval()


def build_dinov2_s36():
    """Plain MLP (GELU), mlp_ratio 3, 4x4 position grid (image_size 56), eps 1e-5."""
    return _dinov2(
        1,
        False,
        hidden_size=36,
        num_hidden_layers=2,
        num_attention_heads=3,
        mlp_ratio=3,
        image_size=56,
        patch_size=14,
        layer_norm_eps=1e-5,
        layerscale_value=0.5,
        initializer_range=0.1,
    ), 1


def build_dinov2_swiglu_s42():
    """SwiGLU FFN (giant-style); 42 * 3 = 126 -> 2/3 -> 84 -> rounded up to a multiple of 8: 88.

    10x10 position grid (image_size 140): the 98 input downsamples it."""
    return _dinov2(
        2,
        False,
        hidden_size=42,
        num_hidden_layers=3,
        num_attention_heads=3,
        mlp_ratio=3,
        image_size=140,
        patch_size=14,
        use_swiglu_ffn=True,
        layerscale_value=0.3,
        initializer_range=0.1,
    ), 1


def build_dinov2_reg4_s36():
    """With 4 registers, mlp_ratio 2, 10x10 position grid (antialiased bicubic, down and up)."""
    return _dinov2(
        3,
        True,
        hidden_size=36,
        num_hidden_layers=2,
        num_attention_heads=3,
        mlp_ratio=2,
        image_size=140,
        patch_size=14,
        num_register_tokens=4,
        layerscale_value=0.7,
        initializer_range=0.1,
    ), 5


# name -> () -> (model, number of prefix tokens: CLS + registers)
BUILDERS: dict[str, Callable[[], tuple[object, int]]] = {
    "dinov2_s36": build_dinov2_s36,
    "dinov2_swiglu_s42": build_dinov2_swiglu_s42,
    "dinov2_reg4_s36": build_dinov2_reg4_s36,
}


def main(argv: list[str]) -> None:
    torch.set_num_threads(2)
    OUT.mkdir(parents=True, exist_ok=True)
    wanted = argv or list(BUILDERS)
    unknown = [w for w in wanted if w not in BUILDERS]
    if unknown:
        raise SystemExit(f"unknown fixture(s) {unknown}; known: {list(BUILDERS)}")
    for res in RESOLUTIONS:
        write_inputs(res)
    for name in wanted:
        model, prefix = BUILDERS[name]()
        write_snapshot(model, name)
        for res in RESOLUTIONS:
            write_reference(model, name, res, prefix)


if __name__ == "__main__":
    main(sys.argv[1:])
