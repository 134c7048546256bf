"""Pretrains the demo backbone: a tiny DINOv2-with-registers ViT, distilled from a small CNN.

    python tools/pretrain_demo_backbone.py --sv72 target/release/sv72 \
        --out tests/fixtures/backbones/demo_dinov2_reg4_h48

Why: a randomly initialised tiny ViT does not learn the demo task from a few hundred images
(README, "The demo learns"): ViTs lack the locality prior a CNN has, and measured here a 64-wide,
4-block ViT from scratch stays at chance on 2,000 scenes while a 4-layer CNN reaches MCC 0.74 after
one epoch. Real miners start from a pretrained backbone, so the demo does too: this script

1. draws its own scenes with `sv72 demo-data --seed 5` (another seed than the demo's 72, so the
   demo's train/val/test images are never seen here);
2. trains a 4-layer CNN on them (clean centre crops + flips, the roadwork label);
3. distils the CNN into the ViT: every patch token regresses the CNN's feature map at its place
   (dense) and CLS its logit (weighted 0.1), on clean crops only: no validator augmentation, no
   weather, so what `finetune` adds on the demo mix (the validators' levels, the mix itself) is
   still there to learn;
4. writes an HF snapshot (`config.json`, `model.safetensors`) with the demo's
   `preprocessor_config.json` (BitImageProcessor, 256 → 224, ImageNet mean/std).

Needs torch and transformers (tools/requirements.txt); CPU only, ~25 min on 2 cores. Every random
draw comes from torch's global generator seeded by `--seed`, so a rerun with the same torch build
and thread count reproduces the committed weights up to float summation order.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

SIZE = 224
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
PREPROCESSOR = {
    "crop_size": {"height": SIZE, "width": SIZE},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 256},
}


def load(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Every scene under root/{real,synthetic}/{roadwork,none}, as the processor would crop it."""
    xs, ys = [], []
    for style in ("real", "synthetic"):
        for label, y in (("roadwork", 1.0), ("none", 0.0)):
            for f in sorted(glob.glob(str(root / style / label / "*.jpg"))):
                im = Image.open(f).convert("RGB")
                w, h = im.size
                im = im.resize((round(w * 256 / h), 256), Image.BICUBIC)
                left, top = (im.width - SIZE) // 2, (256 - SIZE) // 2
                im = im.crop((left, top, left + SIZE, top + SIZE))
                xs.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
                ys.append(y)
    x = (torch.stack(xs).float() / 255 - MEAN) / STD
    return x, torch.tensor(ys)


def flip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(3) if torch.rand(1).item() < 0.5 else x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sv72", required=True, help="the sv72 binary (for demo-data)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--scenes", type=int, default=1000, help="scenes per style")
    ap.add_argument("--hidden", type=int, default=48)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--cnn-epochs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t0 = time.time()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "scenes"
        subprocess.run([a.sv72, "demo-data", "--out", str(data), "--seed", "5", "--count",
                        str(a.scenes), "--no-extras"], check=True, stdout=subprocess.DEVNULL)
        x, y = load(data)
    print(f"{len(y)} scenes ({int(y.sum())} roadwork), {time.time() - t0:.0f} s", flush=True)

    body = nn.Sequential(
        nn.Conv2d(3, 32, 5, 2, 2), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
        nn.Conv2d(64, 64, 3, 2, 1), nn.GELU(), nn.Conv2d(64, 64, 3, 1, 1), nn.GELU())
    cls = nn.Linear(64, 1)
    opt = torch.optim.AdamW([*body.parameters(), *cls.parameters()], lr=1e-3, weight_decay=0.05)
    for ep in range(a.cnn_epochs):
        perm = torch.randperm(len(y))
        total = 0.0
        for i in range(0, len(y), 32):
            idx = perm[i:i + 32]
            logit = cls(body(flip(x[idx])).amax((2, 3))).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logit, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"cnn epoch {ep}: loss {total / len(y):.3f}, {time.time() - t0:.0f} s", flush=True)
    body.eval()

    grid = SIZE // 14
    cfg = Dinov2WithRegistersConfig(
        hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=max(1, a.hidden // 16),
        mlp_ratio=2, patch_size=14, image_size=SIZE, num_register_tokens=4,
        initializer_range=0.02, layerscale_value=1.0, layer_norm_eps=1e-6)
    vit = Dinov2WithRegistersModel(cfg)
    dense, logit_head = nn.Linear(a.hidden, 64), nn.Linear(a.hidden, 1)
    params = [*vit.parameters(), *dense.parameters(), *logit_head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    steps, step = a.epochs * math.ceil(len(y) / 32), 0
    skip = 1 + cfg.num_register_tokens
    for ep in range(a.epochs):
        perm = torch.randperm(len(y))
        total, n = 0.0, 0
        for i in range(0, len(y), 32):
            batch = flip(x[perm[i:i + 32]])
            with torch.no_grad():
                fmap = body(batch)
                target = F.adaptive_avg_pool2d(fmap, grid).flatten(2).transpose(1, 2)
                target_logit = cls(fmap.amax((2, 3))).squeeze(1)
            h = vit(pixel_values=batch).last_hidden_state
            loss = F.mse_loss(dense(h[:, skip:]), target) + 0.1 * F.mse_loss(
                logit_head(h[:, 0]).squeeze(1), target_logit)
            lr = 1e-3 * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            total, n = total + loss.item(), n + 1
        print(f"vit epoch {ep}: distillation loss {total / n:.4f}, {time.time() - t0:.0f} s", flush=True)

    a.out.mkdir(parents=True, exist_ok=True)
    vit.save_pretrained(a.out)
    (a.out / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
