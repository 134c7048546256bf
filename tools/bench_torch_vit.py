"""PyTorch eager baseline for `cargo bench --bench backbone`: same ViT-S/14 + 4 registers config
(facebook/dinov2-with-registers-small shapes, random weights), 224x224, f32, 2 threads.

    /root/.venvs/sv72tools/bin/python tools/bench_torch_vit.py [--secs 6]

Prints one line per attention implementation (`sdpa`, the transformers default, and `eager`)
and batch size.
"""

import argparse
import time

import torch
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

CONFIG = dict(
    hidden_size=384,
    num_attention_heads=6,
    num_hidden_layers=12,
    mlp_ratio=4,
    hidden_act="gelu",
    image_size=518,
    patch_size=14,
    num_register_tokens=4,
    layer_norm_eps=1e-6,
    layerscale_value=1.0,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=float, default=6.0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(72)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, ViT-S/14 + 4 registers, 224x224, f32")
    for attn in ("sdpa", "eager"):
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**CONFIG, attn_implementation=attn)).eval()
        for batch in (1, 8):
            x = torch.randn(batch, 3, 224, 224)
            with torch.no_grad():
                for _ in range(3):
                    model(pixel_values=x)
                iters, start = 0, time.perf_counter()
                while iters < 3 or time.perf_counter() - start < args.secs:
                    model(pixel_values=x)
                    iters += 1
                dt = time.perf_counter() - start
            print(
                f"torch-{attn:<6} batch {batch}: {dt * 1e3 / iters:8.1f} ms/batch  "
                f"{batch * iters / dt:7.2f} images/s  ({iters} iters)"
            )


if __name__ == "__main__":
    main()
