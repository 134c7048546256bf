"""PyTorch eager comparator for `sv72 bench` (and `cargo bench --bench backbone`): the same
named sizes with random weights, square input, the same batch sizes, median ms per batch,
images/s and CPU time over wall time (cores busy) per line.

    /work/venvs/perf/bin/python tools/bench_torch_vit.py --backbone vits14-reg --batch 1,8 \
        [--threads 2] [--secs 6] [--device cpu|cuda] [--dtype f32|f16|bf16] [--attn sdpa,eager]

Named sizes as `sv72 bench`: vits14, vits14-reg, vitb14, vitl14, dinov3-vits16, dinov3-vitl16,
siglip2-base-p16-224, siglip2-large-p16-256, siglip2-so400m-p14-384 (fixed-resolution SigLIP 2:
pass `--image-size` for its own resolution; other sizes interpolate the position table as
`sv72 bench` does), siglip2-base-p16-naflex, siglip2-so400m-p16-naflex (NaFlex: the square image
as (image-size/16)² patches, no padding, as sv72 runs one image size per batch).
"""

import argparse
import os
import resource
import statistics
import time

import torch

SIZES = {
    "vits14": (384, 6, 12, 1536, 0),
    "vits14-reg": (384, 6, 12, 1536, 4),
    "vitb14": (768, 12, 12, 3072, 0),
    "vitl14": (1024, 16, 24, 4096, 0),
    "dinov3-vits16": (384, 6, 12, 1536, 4),
    "dinov3-vitl16": (1024, 16, 24, 4096, 4),
    "siglip2-base-p16-224": (768, 12, 12, 3072, 0),
    "siglip2-large-p16-256": (1024, 16, 24, 4096, 0),
    "siglip2-so400m-p14-384": (1152, 16, 27, 4304, 0),
    "siglip2-base-p16-naflex": (768, 12, 12, 3072, 0),
    "siglip2-so400m-p16-naflex": (1152, 16, 27, 4304, 0),
}


def build(name: str, attn: str):
    d, heads, layers, mlp, regs = SIZES[name]
    if name.endswith("naflex"):
        from transformers import Siglip2VisionConfig, Siglip2VisionModel

        cfg = Siglip2VisionConfig(
            hidden_size=d, num_attention_heads=heads, num_hidden_layers=layers,
            intermediate_size=mlp, patch_size=16, num_patches=256, attn_implementation=attn,
        )
        return Siglip2VisionModel(cfg)
    if name.startswith("siglip2-"):
        from transformers import SiglipVisionConfig, SiglipVisionModel

        patch, image = int(name.split("-p")[1].split("-")[0]), int(name.rsplit("-", 1)[1])
        cfg = SiglipVisionConfig(
            hidden_size=d, num_attention_heads=heads, num_hidden_layers=layers,
            intermediate_size=mlp, patch_size=patch, image_size=image, attn_implementation=attn,
        )
        return SiglipVisionModel(cfg)
    if name.startswith("dinov3"):
        from transformers import DINOv3ViTConfig, DINOv3ViTModel

        cfg = DINOv3ViTConfig(
            hidden_size=d, num_attention_heads=heads, num_hidden_layers=layers,
            intermediate_size=mlp, num_register_tokens=regs, patch_size=16, image_size=224,
            hidden_act="gelu", layerscale_value=1.0, query_bias=True, key_bias=False,
            value_bias=True, proj_bias=True, mlp_bias=True, rope_theta=100.0,
            attn_implementation=attn,
        )
        return DINOv3ViTModel(cfg)
    common = dict(
        hidden_size=d, num_attention_heads=heads, num_hidden_layers=layers, mlp_ratio=mlp // d,
        hidden_act="gelu", image_size=518, patch_size=14, layer_norm_eps=1e-6,
        layerscale_value=1.0, attn_implementation=attn,
    )
    if regs:
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        return Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**common, num_register_tokens=regs))
    from transformers import Dinov2Config, Dinov2Model

    return Dinov2Model(Dinov2Config(**common))


def cpu_time() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="vits14-reg", choices=sorted(SIZES))
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--secs", type=float, default=6.0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
    ap.add_argument("--attn", default="sdpa,eager")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(72)
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.backbone}, "
        f"{args.image_size}x{args.image_size}, {args.dtype}, {args.device}"
    )
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for attn in args.attn.split(","):
        model = build(args.backbone, attn).eval().to(args.device, dtype)
        for batch in (int(b) for b in args.batch.split(",")):
            x = torch.randn(batch, 3, args.image_size, args.image_size, device=args.device, dtype=dtype)
            kw = {"pixel_values": x}
            if args.backbone.startswith("siglip2-") and not args.backbone.endswith("naflex"):
                kw["interpolate_pos_encoding"] = True
            if args.backbone.endswith("naflex"):
                g = args.image_size // 16
                patches = x.reshape(batch, 3, g, 16, g, 16).permute(0, 2, 4, 3, 5, 1)
                kw = {
                    "pixel_values": patches.reshape(batch, g * g, 3 * 16 * 16).contiguous(),
                    "pixel_attention_mask": torch.ones(batch, g * g, dtype=torch.int32, device=args.device),
                    "spatial_shapes": torch.tensor([[g, g]] * batch, device=args.device),
                }
            with torch.inference_mode():
                for _ in range(2):
                    model(**kw)
                sync()
                times, wall0, cpu0 = [], time.perf_counter(), cpu_time()
                while len(times) < 3 or time.perf_counter() - wall0 < args.secs:
                    t = time.perf_counter()
                    model(**kw)
                    sync()
                    times.append(time.perf_counter() - t)
                wall, cpu = time.perf_counter() - wall0, cpu_time() - cpu0
            ms = statistics.median(times) * 1e3
            print(
                f"torch-{attn:<6} batch {batch:>3}: {ms:9.1f} ms/batch {batch * 1e3 / ms:8.2f} images/s"
                f"  cores {cpu / wall:4.2f}  ({len(times)} iters)",
                flush=True,
            )
    print(f"peak host memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    main()
