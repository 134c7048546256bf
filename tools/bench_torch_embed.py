"""The Python pipeline `sv72 embed` is compared with (issue #11): PIL decode, the snapshot's
AutoImageProcessor and AutoModel, CLS features of every image in a folder at a batch size.

    python tools/bench_torch_embed.py SNAPSHOT IMAGES_DIR [--batch 8] [--threads 2]

Prints the whole process's wall time (imports and model load included, the issue's measure),
the time of the decode + preprocess + forward loop alone, and the cores kept busy.
"""

import argparse
import os
import time

START = time.perf_counter()
CPU0 = os.times()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("snapshot")
    ap.add_argument("images")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel

    torch.set_num_threads(args.threads)
    proc = AutoImageProcessor.from_pretrained(args.snapshot)
    model = AutoModel.from_pretrained(args.snapshot).eval()
    paths = sorted(
        os.path.join(root, f)
        for root, _, files in os.walk(args.images)
        for f in files
        if f.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    loop0 = time.perf_counter()
    feats = []
    with torch.inference_mode():
        for i in range(0, len(paths), args.batch):
            imgs = [Image.open(p).convert("RGB") for p in paths[i : i + args.batch]]
            px = proc(images=imgs, return_tensors="pt")["pixel_values"]
            feats.append(model(pixel_values=px).last_hidden_state[:, 0])
    end = time.perf_counter()
    cpu = os.times()
    cpu_s = (cpu.user - CPU0.user) + (cpu.system - CPU0.system)
    n = sum(f.shape[0] for f in feats)
    print(
        f"python embed: {n} images, batch {args.batch}, {args.threads} threads: "
        f"process {end - START:.2f} s, loop {end - loop0:.2f} s, "
        f"cores {cpu_s / (end - START):.2f}"
    )


if __name__ == "__main__":
    main()
