"""PyTorch + PEFT comparator for `sv72 bench --train lora|full` (issue #14): fine-tuning
optimiser steps of a random ViT of a named size, on random pixels, with the same options and
the same recipe as `sv72 finetune`:

* the `transformers` backbone (`Dinov2WithRegistersModel` / `Dinov2Model` / `DINOv3ViTModel`)
  from a random config of the size, and a linear head on `[CLS ; mean of patch tokens]` of
  the last hidden state;
* `lora`: PEFT `LoraConfig(r=8, lora_alpha=16, lora_dropout=0)` on the attention projections
  (query, key, value and the output dense: `q_proj/k_proj/v_proj/o_proj` in transformers 5,
  `query/key/value/dense` in 4.x), as sv72's `lora_targets` (`finetune.lora` defaults);
  `full`: every backbone weight; the head always;
* cross-entropy, `clip_grad_norm_(1.0)`, `torch.optim.AdamW` (weight decay 0.05 on matrices
  only) with layer-wise learning rates (`1e-3 · 0.75^(L + 1 - depth)`), one group per
  (depth, decay) pair.

Prints median ms per optimiser step, images/s, CPU time over wall time of the timed steps
(cores busy) and the process's peak resident memory (`ru_maxrss`, which includes the torch
import itself).

    /work/venvs/finetune/bin/python tools/bench_torch_finetune.py --backbone vits14-reg \\
        --train lora --batch 32 [--threads 2] [--steps 5] [--warmup-steps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

from bench_torch_vit import SIZES, build

HP = {"lr": 1e-3, "layer_decay": 0.75, "weight_decay": 0.05, "max_grad_norm": 1.0,
      "lora_rank": 8, "lora_alpha": 16.0}


def cpu_time() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def depth_of(name: str, layers: int) -> int:
    parts = name.split(".")
    if "layer" in parts:
        return int(parts[parts.index("layer") + 1]) + 1
    if "embeddings." in name:
        return 0
    return layers + 1


def decays(name: str, p: torch.Tensor) -> bool:
    tokens = ("cls_token", "register_tokens", "position_embeddings", "mask_token")
    return p.ndim >= 2 and not any(t in name for t in tokens)


def attention_targets(model: torch.nn.Module) -> list[str]:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    for targets in (["q_proj", "k_proj", "v_proj", "o_proj"], ["query", "key", "value", "dense"]):
        if all(t in names for t in targets):
            return targets
    raise SystemExit(f"no known attention projection names in {sorted(names)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="vits14-reg", choices=sorted(SIZES))
    ap.add_argument("--train", default="lora", choices=["lora", "full"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(72)

    model = build(args.backbone, args.attn)
    cfg = model.config
    layers, d = cfg.num_hidden_layers, cfg.hidden_size
    prefix = 1 + getattr(cfg, "num_register_tokens", 0)
    backbone_params = sum(p.numel() for p in model.parameters())
    if args.train == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=HP["lora_rank"], lora_alpha=HP["lora_alpha"], lora_dropout=0.0,
            target_modules=attention_targets(model), bias="none"))
    else:
        for n, p in model.named_parameters():
            p.requires_grad_("mask_token" not in n)
    model.train()
    head = torch.nn.Linear(2 * d, 2)
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable_params = sum(p.numel() for _, p in trained)

    groups: dict[tuple[int, bool], list[torch.Tensor]] = {}
    for n, p in trained:
        groups.setdefault((depth_of(n, layers), decays(n, p)), []).append(p)
    param_groups = [
        {"params": ps, "lr": HP["lr"] * HP["layer_decay"] ** (layers + 1 - depth),
         "weight_decay": HP["weight_decay"] if dec else 0.0}
        for (depth, dec), ps in groups.items()
    ]
    param_groups.append({"params": [head.weight], "lr": HP["lr"], "weight_decay": HP["weight_decay"]})
    param_groups.append({"params": [head.bias], "lr": HP["lr"], "weight_decay": 0.0})
    opt = torch.optim.AdamW(param_groups, betas=(0.9, 0.999), eps=1e-8)
    all_params = [p for g in param_groups for p in g["params"]]
    labels = torch.arange(args.batch) % 2

    def step(x: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        hidden = model(pixel_values=x).last_hidden_state
        feats = torch.cat([hidden[:, 0], hidden[:, prefix:].mean(1)], dim=-1)
        loss = torch.nn.functional.cross_entropy(head(feats), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(all_params, HP["max_grad_norm"])
        opt.step()
        return loss.item()

    s = args.image_size
    batch = lambda: torch.randn(args.batch, 3, s, s)  # noqa: E731 (fresh pixels every step)
    loss = float("nan")
    for _ in range(args.warmup_steps):
        loss = step(batch())
    times, cpu, wall = [], 0.0, 0.0
    for _ in range(args.steps):
        x = batch()
        t, c = time.perf_counter(), cpu_time()
        loss = step(x)
        dt = time.perf_counter() - t
        cpu += cpu_time() - c
        wall += dt
        times.append(dt)
    ms = statistics.median(times) * 1e3
    report = {
        "backbone": args.backbone, "device": "cpu", "threads": torch.get_num_threads(),
        "mode": args.train, "batch": args.batch, "image_size": s, "attn": args.attn,
        "trainable_params": trainable_params, "backbone_params": backbone_params,
        "warmup_steps": args.warmup_steps, "steps": args.steps, "ms_per_step": ms,
        "images_per_s": args.batch * 1e3 / ms, "cores_used": cpu / wall, "last_loss": loss,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
    }
    print(
        f"torch {torch.__version__} finetune {args.train} on {args.backbone} (random), "
        f"{torch.get_num_threads()} threads, batch {args.batch}, {s}x{s} input, attn {args.attn}\n"
        f"{trainable_params} of {backbone_params} backbone parameters trained (+ head)\n"
        f"{'ms/step':>8} {'images/s':>10} {'cores':>8} {'steps':>6} {'last loss':>10}\n"
        f"{ms:>8.1f} {report['images_per_s']:>10.2f} {report['cores_used']:>8.2f} "
        f"{args.steps:>6} {loss:>10.4f}\n"
        f"peak host memory {report['peak_rss_mib']:.0f} MiB"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
