"""Reference data for `sv72 export` (tests/export.rs) and a transformers check of real exports.

1. (default) Builds transformers' Dinov2ForImageClassification /
   Dinov2WithRegistersForImageClassification from the tiny fixture backbone configs
   (num_labels 2, id2label None/Roadwork) and writes tests/fixtures/export/reference_<family>.json:
   state-dict key names and shapes (in memory, and as save_pretrained writes them), and the
   config.json that save_pretrained writes.
2. --check DIR --probs FILE: loads an sv72 export with
   pipeline("image-classification", model=DIR) (trust_remote_code=True when config.json has an
   auto_map), scores the images listed in FILE (JSON written by `sv72 export --selfcheck-out` or
   the export test) and prints max |Roadwork score - sv72 probability|.

Run with /root/.venvs/sv72tools/bin/python from the repository root.
"""
import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")


def reference():
    import torch
    from transformers import (
        Dinov2Config,
        Dinov2ForImageClassification,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersForImageClassification,
    )

    cases = [
        ("dinov2", "dinov2_s36", Dinov2Config, Dinov2ForImageClassification),
        ("dinov2_swiglu", "dinov2_swiglu_s42", Dinov2Config, Dinov2ForImageClassification),
        (
            "dinov2_with_registers",
            "dinov2_reg4_s36",
            Dinov2WithRegistersConfig,
            Dinov2WithRegistersForImageClassification,
        ),
    ]
    out_dir = os.path.join(FIX, "export")
    os.makedirs(out_dir, exist_ok=True)
    for family, fixture, cfg_cls, model_cls in cases:
        cfg = cfg_cls.from_pretrained(os.path.join(FIX, "backbones", fixture))
        cfg.num_labels = 2
        cfg.id2label = {0: "None", 1: "Roadwork"}
        cfg.label2id = {"None": 0, "Roadwork": 1}
        torch.manual_seed(0)
        model = model_cls(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            with open(os.path.join(tmp, "config.json")) as f:
                saved = json.load(f)
            from safetensors import safe_open

            with safe_open(os.path.join(tmp, "model.safetensors"), "pt") as f:
                saved_tensors = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
        state = {k: list(v.shape) for k, v in model.state_dict().items()}
        ref = {
            "family": family,
            "fixture": fixture,
            "architecture": model_cls.__name__,
            # In-memory names (transformers 5 renames q_proj/k_proj/...).
            "state_dict": dict(sorted(state.items())),
            # What save_pretrained writes to model.safetensors (the hub's names, which every
            # transformers version loads): the layout sv72 exports.
            "saved_tensors": dict(sorted(saved_tensors.items())),
            "config": saved,
        }
        path = os.path.join(out_dir, f"reference_{family}.json")
        with open(path, "w") as f:
            json.dump(ref, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"wrote {path}: {len(state)} tensors")


def check(export_dir, probs_path):
    from PIL import Image
    from transformers import pipeline

    with open(os.path.join(export_dir, "config.json")) as f:
        config = json.load(f)
    remote = "auto_map" in config
    clf = pipeline(
        "image-classification",
        model=export_dir,
        trust_remote_code=remote,
        use_fast=True,
        device="cpu",
    )
    with open(probs_path) as f:
        probs = json.load(f)
    worst = 0.0
    for row in probs["images"]:
        image = Image.open(row["image"])
        scores = clf(image, top_k=2)
        roadwork = next(s["score"] for s in scores if s["label"] == "Roadwork")
        d = abs(roadwork - row["export"])
        worst = max(worst, d)
        print(f"  {os.path.basename(row['image'])}: transformers {roadwork:.7f} sv72 {row['export']:.7f} |d| {d:.2e}")
    arch = config.get("architectures")
    print(f"{export_dir}: {arch} trust_remote_code={remote} max |d| = {worst:.3e}")
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", metavar="DIR", nargs="*", help="export folders to check")
    ap.add_argument("--probs", metavar="FILE", help="probabilities JSON (default DIR/../<name>.probs.json)")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    if a.check is None:
        reference()
        return 0
    bad = 0
    for d in a.check:
        d = d.rstrip("/")
        probs = a.probs or d + ".probs.json"
        if check(d, probs) > a.tol:
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
