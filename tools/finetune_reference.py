"""One optimiser step of `sv72 finetune` in PyTorch + PEFT, for the Rust parity tests.

    python tools/finetune_reference.py        # writes tests/fixtures/finetune/<family>.safetensors

For each tiny backbone fixture (DINOv2, DINOv2 with registers, DINOv3) and each mode (`lora`,
`partial`, `full`), the model is the `transformers` module loaded from the fixture snapshot plus
a linear head on `[CLS ; mean of patch tokens]` of the last hidden state, trained exactly as
sv72 trains it:

* loss: class-weighted cross-entropy with label smoothing `eps` (targets `onehot (1 - eps) + eps / 2`),
  summed over the batch and divided by the summed class weights;
* `lora`: PEFT `LoraConfig(r=4, lora_alpha=8, lora_dropout=0)` on q/k/v/o of every block
  (lora_B re-drawn non-zero so that both adapter matrices get gradients); `partial`: the last
  block and the final norm; `full`: everything; the head always;
* gradients clipped by their global norm (`clip_grad_norm_`, max 1.0);
* `torch.optim.AdamW` (β 0.9/0.999, ε 1e-4, see `HP`) with one parameter group per tensor: learning rate
  `lr · layer_decay^(L + 1 - depth)` (depth 0 = embeddings, i + 1 = block i, L + 1 = final norm;
  the head at `head_lr`), weight decay only on matrices (not biases, norms, layer scales, CLS /
  register tokens or position embeddings);
* the model in eval mode (dropouts are 0; DINOv3's training-only RoPE rescale stays off, as in
  sv72).

Tensors are named as the snapshot names them (legacy DINOv2 hub names; adapters as
`<weight name>.lora_A.weight`). Each file holds the batch (`pixel_values`, `labels`,
`class_weights`), the hyper-parameters, and per mode `<mode>/init/<name>` (adapters and head
before the step), `<mode>/loss` and `<mode>/after/<name>` (every trained tensor after the step).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
BACKBONES = ROOT / "tests" / "fixtures" / "backbones"
OUT = ROOT / "tests" / "fixtures" / "finetune"

# family fixture -> input side (a grid other than the learned one, so DINOv2 interpolates)
FAMILIES = {"dinov2_s36": 42, "dinov2_reg4_s36": 48, "dinov3-tiny": 48}
MODES = ("lora", "partial", "full")
HP = {
    "lr": 1e-3,  # the step's learning rate (warm-up already applied)
    "head_lr": 2e-3,
    "layer_decay": 0.7,
    "weight_decay": 0.05,
    "max_grad_norm": 1.0,
    "label_smoothing": 0.1,
    "lora_rank": 4,
    "lora_alpha": 8.0,
    "partial_blocks": 1,
    # Adam's epsilon. An element whose true gradient is ~0 (DINOv2's key bias is exactly 0,
    # softmax being shift-invariant per row; some adapter entries are ~1e-7) gets a first-step
    # update lr·g/(|g| + ε) that float32 rounding of g (~5e-8 absolute here; PyTorch float32 and
    # float64 differ that much) moves by lr·δg/ε: 4e-5 at PyTorch's default ε = 1e-8. ε = 1e-4
    # bounds that below 1e-6, so the comparison tests the maths rather than the noise; every
    # other element (|g| ≫ 1e-4) is stepped as with any ε. sv72 itself runs with 1e-8.
    "eps": 1e-4,
}
CLASS_WEIGHTS = [0.8, 1.25]
LABELS = [0, 1, 1, 0]

# transformers 5 runtime names -> the snapshot's (legacy hub) names
DINOV2_RENAMES = [
    ("attention.q_proj", "attention.attention.query"),
    ("attention.k_proj", "attention.attention.key"),
    ("attention.v_proj", "attention.attention.value"),
    ("attention.o_proj", "attention.output.dense"),
]


def snapshot_name(runtime: str, family: str) -> str:
    name = runtime.replace("base_model.model.", "").replace(".default.", ".")
    if family.startswith("dinov2"):
        for new, old in DINOV2_RENAMES:
            name = name.replace(new, old)
    return name


def depth_of(name: str, layers: int) -> int:
    parts = name.split(".")
    if "layer" in parts:
        return int(parts[parts.index("layer") + 1]) + 1
    if name.startswith("embeddings."):
        return 0
    return layers + 1


def decays(name: str, p: torch.Tensor) -> bool:
    tokens = ("cls_token", "register_tokens", "position_embeddings", "mask_token")
    return p.ndim >= 2 and not any(t in name for t in tokens)


def run(family: str, side: int, mode: str, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
    torch.manual_seed(1234 + MODES.index(mode))
    model = transformers.AutoModel.from_pretrained(BACKBONES / family, dtype=torch.float32)
    model.eval()
    cfg = model.config
    layers, d = cfg.num_hidden_layers, cfg.hidden_size
    prefix = 1 + getattr(cfg, "num_register_tokens", 0)
    head = torch.nn.Linear(2 * d, 2)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.2)
        head.bias.normal_(0.0, 0.1)

    if mode == "lora":
        lcfg = LoraConfig(
            r=HP["lora_rank"],
            lora_alpha=HP["lora_alpha"],
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            bias="none",
        )
        model = get_peft_model(model, lcfg)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0.0, 0.1)
    else:
        for n, p in model.named_parameters():
            depth = depth_of(n, layers)
            trains = mode == "full" or depth > layers - HP["partial_blocks"]
            p.requires_grad_(trains and "mask_token" not in n)

    out = {}
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for n, p in trained:
        if "lora_" in n:
            out[f"{mode}/init/{snapshot_name(n, family)}"] = p.detach().clone()
    out[f"{mode}/init/classifier.weight"] = head.weight.detach().clone()
    out[f"{mode}/init/classifier.bias"] = head.bias.detach().clone()

    hidden = model(pixel_values=pixel_values).last_hidden_state
    feats = torch.cat([hidden[:, 0], hidden[:, prefix:].mean(1)], dim=-1)
    logits = head(feats)
    eps = HP["label_smoothing"]
    y = torch.tensor(LABELS)
    targets = torch.nn.functional.one_hot(y, 2).float() * (1 - eps) + eps / 2
    w = torch.tensor(CLASS_WEIGHTS)[y]
    per_row = -(torch.log_softmax(logits, dim=1) * targets).sum(1) * w
    loss = per_row.sum() / w.sum()
    loss.backward()

    params = trained + [("classifier.weight", head.weight), ("classifier.bias", head.bias)]
    torch.nn.utils.clip_grad_norm_([p for _, p in params], HP["max_grad_norm"])
    groups = []
    for n, p in params:
        if n.startswith("classifier."):
            lr = HP["head_lr"]
        else:
            lr = HP["lr"] * HP["layer_decay"] ** (layers + 1 - depth_of(n, layers))
        wd = HP["weight_decay"] if decays(n, p) else 0.0
        groups.append({"params": [p], "lr": lr, "weight_decay": wd})
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=HP["eps"])
    opt.step()

    out[f"{mode}/loss"] = loss.detach().reshape(1)
    for n, p in params:
        out[f"{mode}/after/{snapshot_name(n, family)}"] = p.detach().clone()
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for family, side in FAMILIES.items():
        g = torch.Generator().manual_seed(7)
        pixel_values = torch.randn(len(LABELS), 3, side, side, generator=g)
        tensors = {
            "pixel_values": pixel_values,
            "labels": torch.tensor(LABELS, dtype=torch.float32),
            "class_weights": torch.tensor(CLASS_WEIGHTS),
        }
        for mode in MODES:
            tensors.update(run(family, side, mode, pixel_values))
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        meta = {"hyper_parameters": json.dumps(HP), "torch": torch.__version__,
                "transformers": transformers.__version__}
        path = OUT / f"{family}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        print(f"{path.relative_to(ROOT)}: {len(tensors)} tensors, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
