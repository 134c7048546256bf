"""`make compat`: which transformers stacks load sv72's exports, and do they answer what sv72 does.

For every fixture backbone family (tests/fixtures/backbones: DINOv2, DINOv2-SwiGLU,
DINOv2-with-registers, DINOv3, DINOv3-gated) x head (linear, MLP), for plain DINOv2 both
preprocessing recipes, and for `sv72 finetune` (LoRA merged, full) on DINOv2 and DINOv2-reg, this:

1. builds two virtual environments (once, under --venvs): the subnet miner's pinned stack
   (tools/compat-subnet.txt: transformers 4.45.2, torch 2.6.0, pillow 10.4.0, python 3.11) and
   current transformers (tools/compat-current.txt);
2. trains a head with the real CLI on `sv72 demo-data` scenes (ingest, synth-mix, train-head, or
   a short `finetune`)
   and exports it with the default `--target subnet` where the model allows it, else
   `--target transformers` (which the table then shows), with `--selfcheck` on the scored
   images: sv72's probabilities through the predictor `sv72 serve` loads, decoded by the
   crate-wide rule;
3. loads each export exactly as the subnet's miner does (base_miner/detectors/vit_detector.py:
   `pipeline("image-classification", model=AutoModelForImageClassification.from_pretrained(d),
   feature_extractor=AutoImageProcessor.from_pretrained(d, use_fast=True))`, images opened with
   `Image.open(BytesIO(bytes))` as neurons/miner.py does), one export per process (in 4.45.2
   loading an auto_map export changes later loads in the same process); where that fails and the
   export has remote code, it also tries `trust_remote_code=True` (which the miner never passes);
4. scores JPEGs saved by PIL with default settings (what validators send), 4:4:4 and
   progressive JPEGs, PNGs, RGBA, grey, CMYK and EXIF-rotated images, and compares the "Roadwork"
   score with sv72's: max |delta| per image kind and decision flips (> 0.5).

It prints the table README shows (`--readme` rewrites README's marked section) and exits 1 when
a default-target export fails to load in either stack, differs by more than 1e-4 on any image
kind or flips a decision. `--write-references` stores the verified default-target exports'
config.json / preprocessor_config.json under tests/fixtures/export/subnet/, which CI's Rust
tests compare sv72's output with (CI never runs Python).

A developer tool: it downloads torch (twice). Run from the repository root:
    python3 tools/export_compat.py [--readme] [--write-references]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "backbones")
STACKS = [
    ("subnet", "tools/compat-subnet.txt", "transformers 4.45.2 (subnet miner)"),
    ("current", "tools/compat-current.txt", "transformers 5.24.0"),
]
TOL = 1e-4
# (label, fixture, head, preprocess[, how the model is trained: "head" (train-head, the default)
# or a `sv72 finetune --mode` (lora | partial | full), whose export carries the adapted backbone])
CASES = [
    ("dinov2 linear", "dinov2_s36", "linear", "validator"),
    ("dinov2 linear (processor)", "dinov2_s36", "linear", "processor"),
    ("dinov2 MLP", "dinov2_s36", "mlp", "validator"),
    ("dinov2-swiglu linear", "dinov2_swiglu_s42", "linear", "validator"),
    ("dinov2-swiglu MLP", "dinov2_swiglu_s42", "mlp", "validator"),
    ("dinov2-reg4 linear", "dinov2_reg4_s36", "linear", "validator"),
    ("dinov2-reg4 MLP", "dinov2_reg4_s36", "mlp", "validator"),
    ("dinov3 linear", "dinov3-tiny", "linear", "validator"),
    ("dinov3 MLP", "dinov3-tiny", "mlp", "validator"),
    ("dinov3-gated linear", "dinov3-gated", "linear", "validator"),
    ("dinov3-gated MLP", "dinov3-gated", "mlp", "validator"),
    ("dinov2 LoRA fine-tune", "dinov2_s36", "linear", "validator", "lora"),
    ("dinov2 LoRA fine-tune (processor)", "dinov2_s36", "linear", "processor", "lora"),
    ("dinov2 full fine-tune", "dinov2_s36", "linear", "validator", "full"),
    ("dinov2-reg4 LoRA fine-tune", "dinov2_reg4_s36", "linear", "validator", "lora"),
]
KINDS = [
    ("jpeg-pil", "JPEG, PIL defaults (validators)"),
    ("jpeg-444", "JPEG q95 4:4:4"),
    ("jpeg-prog", "progressive JPEG"),
    ("png", "PNG"),
    ("rgba", "RGBA PNG"),
    ("grey", "grey PNG/JPEG"),
    ("cmyk", "CMYK JPEG"),
    ("exif", "EXIF-rotated JPEG"),
]


def log(msg):
    print(msg, flush=True)


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


# ---------------------------------------------------------------- inside a stack's venv


def make_images(src_dir, out_dir):
    """Re-saves demo scenes as every image kind; writes out_dir/index.json."""
    import io

    import numpy as np
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    srcs = []
    for sub in ("real", "synthetic"):
        for cls in ("roadwork", "none"):
            d = os.path.join(src_dir, sub, cls)
            if os.path.isdir(d):
                srcs += [os.path.join(d, f) for f in sorted(os.listdir(d))[:2]]
    index = []

    def put(kind, name, save):
        path = os.path.join(out_dir, name)
        save(path)
        index.append({"kind": kind, "path": path})

    for i, s in enumerate(srcs):
        im = Image.open(s).convert("RGB")
        put("jpeg-pil", f"{i:02d}_pil.jpg", lambda p: im.save(p, format="JPEG"))
        put("jpeg-444", f"{i:02d}_444.jpg", lambda p: im.save(p, format="JPEG", quality=95, subsampling=0))
        put("jpeg-prog", f"{i:02d}_prog.jpg", lambda p: im.save(p, format="JPEG", progressive=True))
        put("png", f"{i:02d}.png", lambda p: im.save(p, format="PNG"))
        a = np.asarray(im)
        alpha = ((np.arange(a.shape[1])[None, :] * 255 // a.shape[1]) * np.ones((a.shape[0], 1))).astype(np.uint8)
        put("rgba", f"{i:02d}_rgba.png", lambda p: Image.fromarray(np.dstack([a, alpha]), "RGBA").save(p))
        put("grey", f"{i:02d}_grey.png", lambda p: im.convert("L").save(p))
        put("grey", f"{i:02d}_grey.jpg", lambda p: im.convert("L").save(p, format="JPEG"))
        cmyk = np.dstack([255 - a, (255 - a.max(axis=2)) // 3])
        put("cmyk", f"{i:02d}_cmyk.jpg", lambda p: Image.fromarray(cmyk.astype(np.uint8), "CMYK").save(p, format="JPEG"))
        ex = Image.Exif()
        ex[0x0112] = (6, 3, 8)[i % 3]
        put("exif", f"{i:02d}_exif.jpg", lambda p: im.save(p, format="JPEG", exif=ex.tobytes()))
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(index, f, indent=1)


def load_and_score(export_dir, index_path, out_path, remote):
    """The subnet miner's load and call, on every indexed image."""
    import io
    import traceback

    import PIL
    import torch
    import transformers
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    torch.set_num_threads(1)
    res = {"transformers": transformers.__version__, "torch": torch.__version__, "pillow": PIL.__version__,
           "remote_code": remote}
    try:
        kw = {"trust_remote_code": True} if remote else {}
        clf = pipeline(
            "image-classification",
            model=AutoModelForImageClassification.from_pretrained(export_dir, **kw),
            feature_extractor=AutoImageProcessor.from_pretrained(export_dir, use_fast=True, **kw),
        )
        res["processor"] = type(clf.image_processor).__name__
        res["model"] = type(clf.model).__name__
    except Exception as e:  # the table records why
        res["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        res["traceback"] = traceback.format_exc()[-2000:]
        with open(out_path, "w") as f:
            json.dump(res, f, indent=1)
        return
    with open(index_path) as f:
        index = json.load(f)
    scores = {}
    for row in index:
        with open(row["path"], "rb") as f:
            image = Image.open(io.BytesIO(f.read()))
        out = {d["label"]: d["score"] for d in clf(image)}
        scores[row["path"]] = out["Roadwork"]
    res["scores"] = scores
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)


# ---------------------------------------------------------------- orchestration


def venv_python(venvs, name, req):
    py = os.path.join(venvs, name, "bin", "python")
    stamp = os.path.join(venvs, name, "requirements.txt")
    want = open(os.path.join(ROOT, req)).read()
    if os.path.exists(py) and os.path.exists(stamp) and open(stamp).read() == want:
        return py
    base = shutil.which("python3.11")
    if base is None:
        raise SystemExit("python3.11 not found: the subnet pins python 3.10/3.11 (install it, e.g. with pyenv or uv)")
    log(f"building venv {name} from {req} (downloads torch)...")
    shutil.rmtree(os.path.join(venvs, name), ignore_errors=True)
    run([base, "-m", "venv", os.path.join(venvs, name)])
    run([py, "-m", "pip", "install", "-q", "-r", os.path.join(ROOT, req)])
    with open(stamp, "w") as f:
        f.write(want)
    return py


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "compat"))
    ap.add_argument("--venvs", default=os.environ.get("SV72_COMPAT_VENVS", os.path.expanduser("~/.cache/sv72/compat-venvs")))
    ap.add_argument("--sv72", help="sv72 binary (default: cargo build --bin sv72)")
    ap.add_argument("--readme", action="store_true", help="rewrite README's compatibility section")
    ap.add_argument("--write-references", action="store_true")
    ap.add_argument("--only", help="run only cases whose label contains this")
    # Internal: run inside a stack's venv.
    ap.add_argument("--make-images", nargs=2, metavar=("SRC", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--load", nargs=3, metavar=("EXPORT", "INDEX", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--remote", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.make_images:
        make_images(*a.make_images)
        return 0
    if a.load:
        load_and_score(*a.load, remote=a.remote)
        return 0

    t0 = time.time()
    pys = {name: venv_python(a.venvs, name, req) for name, req, _ in STACKS}
    sv72 = a.sv72
    if not sv72:
        log("building sv72 (dev profile)...")
        run(["cargo", "build", "--locked", "--bin", "sv72"], cwd=ROOT)
        tdir = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        sv72 = os.path.join(tdir, "debug", "sv72")
    work = os.path.abspath(a.work)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    env = dict(os.environ, SV72_NO_PROGRESS="1")
    base = ["--set", f"paths.datasets={work}/datasets", "--set", f"paths.feature_cache={work}/features",
            "--set", "train.epochs=4"]

    def sv(*args, cwd=work):
        return run([sv72, *base, *args], cwd=cwd, env=env)

    log("demo data -> ingest -> synth-mix...")
    sv("demo-data", "--out", f"{work}/raw", "--count", "48", "--no-extras")
    sv("ingest", "--name", "real", "--folder", f"{work}/raw/real", "--source", "real", "--generator", "demo-photo")
    sv("ingest", "--name", "synth", "--folder", f"{work}/raw/synthetic", "--source", "synthetic", "--generator", "demo-sdxl")
    sv("synth-mix", "--real", "real", "--synthetic", "synth", "--name", "mix")
    images = f"{work}/images"
    run([pys["subnet"], __file__, "--make-images", f"{work}/raw", images])
    with open(f"{images}/index.json") as f:
        index = json.load(f)
    kind_of = {r["path"]: r["kind"] for r in index}

    rows = []
    for label, fixture, head, pre, *how in CASES:
        train = how[0] if how else "head"
        if a.only and a.only not in label:
            continue
        case = label.replace(" ", "_").replace("(", "").replace(")", "")
        snap = os.path.join(FIX, fixture)
        sets = ["--set", f"backbone.model={snap}", "--set", f"head.kind={head}", "--set", f"backbone.preprocess={pre}",
                "--set", f"paths.exports={work}/exports/{case}", "--set", f"paths.checkpoints={work}/checkpoints/{case}"]
        if train == "head":
            log(f"{label}: train-head, export...")
            sv(*sets, "train-head", "--manifest", "mix", "--views", "2")
        else:
            # Two short epochs with a high rate: the point is an export whose backbone weights
            # differ from the snapshot's (merged adapters, updated blocks), not a good model.
            log(f"{label}: finetune --mode {train}, export...")
            sv(*sets, "finetune", "--manifest", "mix", "--mode", train, "--epochs", "2",
               "--set", "finetune.lr=0.01", "--set", "finetune.warmup_steps=0")
        ck = f"{work}/checkpoints/{case}/latest"
        probs = f"{work}/probs_{case}.json"
        hotkey = run([sv72, "query", "--print-hotkey", "--hotkey-seed", "01" * 32]).strip()
        export_cmd = [*sets, "export", ck, "--hotkey", hotkey, "--selfcheck-out", probs]
        for r in index:
            export_cmd += ["--selfcheck", r["path"]]
        target = "subnet"
        r = subprocess.run([sv72, *base, *export_cmd], capture_output=True, text=True, cwd=work, env=env)
        refusal = None
        if r.returncode != 0:
            if "--target transformers" not in r.stderr:
                raise SystemExit(f"{label}: export failed:\n{r.stderr}")
            refusal = r.stderr.strip().splitlines()[-1]
            target = "transformers"
            sv(*export_cmd, "--target", "transformers")
        with open(probs) as f:
            ours = {row["image"]: row["export"] for row in json.load(f)["images"]}
        exp_dir = os.path.join(work, "exports", case, open(os.path.join(work, "exports", case, "latest")).read().strip())
        with open(os.path.join(exp_dir, "config.json")) as f:
            cfg = json.load(f)
        with open(os.path.join(exp_dir, "sv72_export.json")) as f:
            prov = json.load(f)
        row = {"label": label, "fixture": fixture, "head": head, "preprocess": pre, "train": train, "target": target,
               "class": cfg["architectures"][0], "export": exp_dir, "claims": prov["loads_in"],
               "refusal": refusal, "stacks": {}}
        for name, _, _ in STACKS:
            out = f"{work}/load_{case}_{name}.json"
            run([pys[name], __file__, "--load", exp_dir, f"{images}/index.json", out])
            res = json.load(open(out))
            if "error" in res and "auto_map" in cfg:
                out_r = f"{work}/load_{case}_{name}_remote.json"
                run([pys[name], __file__, "--load", exp_dir, f"{images}/index.json", out_r, "--remote"])
                res["with_remote_code"] = json.load(open(out_r))
            row["stacks"][name] = summarize(res, ours, kind_of)
        rows.append(row)
        log("  " + "; ".join(f"{n}: {short(s)}" for n, s in row["stacks"].items()))

    with open(f"{work}/compat.json", "w") as f:
        json.dump(rows, f, indent=1)
    md = table(rows)
    with open(f"{work}/compat.md", "w") as f:
        f.write(md)
    print()
    print(md)
    bad = [r["label"] for r in rows if r["target"] == "subnet" and not all(ok(s) for s in r["stacks"].values())]
    lied = [r["label"] for r in rows
            if [c["loads"] for c in r["claims"]] != [r["stacks"][n]["loads"] or r["stacks"][n].get("loads_with_remote_code", False) for n, _, _ in STACKS]]
    if a.readme:
        update_readme(md)
    if a.write_references and not bad:
        write_references(rows)
    log(f"done in {time.time() - t0:.0f} s; results in {work}/compat.json")
    if lied:
        log(f"sv72_export.json loads_in disagrees with what loaded: {lied}")
    if bad:
        log(f"FAILED: default-target exports that do not load or do not match in both stacks: {bad}")
    return 1 if bad or lied else 0


def summarize(res, ours, kind_of):
    s = {"transformers": res["transformers"], "loads": "error" not in res}
    if "error" in res:
        s["error"] = res["error"]
        rc = res.get("with_remote_code")
        if rc is not None:
            s["loads_with_remote_code"] = "error" not in rc
            if "error" in rc:
                s["remote_error"] = rc["error"]
            else:
                res = rc
        if "scores" not in res:
            return s
    s["processor"], s["model"] = res["processor"], res["model"]
    per = {}
    flips = 0
    for path, theirs in res["scores"].items():
        d = abs(theirs - ours[path])
        k = kind_of[path]
        per[k] = max(per.get(k, 0.0), d)
        flips += (theirs > 0.5) != (ours[path] > 0.5)
    s["max_abs_diff"] = per
    s["flips"] = flips
    s["n"] = len(res["scores"])
    return s


def ok(s):
    return s["loads"] and max(s["max_abs_diff"].values()) <= TOL and s["flips"] == 0


def short(s):
    if not s["loads"] and not s.get("loads_with_remote_code"):
        return "does not load (" + s["error"][:80] + ")"
    how = "loads" if s["loads"] else "loads only with trust_remote_code=True"
    return f"{how}, max |d| {max(s['max_abs_diff'].values()):.1e}, {s['flips']} flips"


def table(rows):
    out = ["| export | target | class | " + " | ".join(d for _, _, d in STACKS) + " | max \\|Δ\\| (both stacks) | flips |",
           "|---|---|---|" + "---|" * len(STACKS) + "---|---|"]
    for r in rows:
        cells = []
        ds, flips = [], 0
        for name, _, _ in STACKS:
            s = r["stacks"][name]
            if s["loads"]:
                cells.append(f"loads (`{s['processor']}`)")
            elif s.get("loads_with_remote_code"):
                cells.append("miner: no; with `trust_remote_code=True`: loads")
            else:
                cells.append("no: " + s["error"].replace("|", "\\|")[:90])
            if "max_abs_diff" in s:
                ds.append(max(s["max_abs_diff"].values()))
                flips += s["flips"]
        cls = r["class"].replace("ForImageClassification", "…")
        tail = f" | {max(ds):.1e} | {flips} |" if ds else " | — | — |"
        out.append(f"| {r['label']} | `{r['target']}` | `{cls}` | " + " | ".join(cells) + tail)
    out.append("")
    out.append("Max |Δ| per image kind (default-target exports, worst of both stacks; "
               f"{sum(1 for _ in KINDS)} kinds):")
    out.append("")
    out.append("| export | " + " | ".join(k for k, _ in KINDS) + " |")
    out.append("|---|" + "---|" * len(KINDS))
    for r in rows:
        if r["target"] != "subnet":
            continue
        per = []
        for k, _ in KINDS:
            v = [s["max_abs_diff"].get(k, 0.0) for s in r["stacks"].values() if "max_abs_diff" in s]
            per.append(f"{max(v):.1e}" if v else "—")
        out.append(f"| {r['label']} | " + " | ".join(per) + " |")
    out.append("")
    return "\n".join(out)


BEGIN, END = "<!-- compat:begin (tools/export_compat.py --readme) -->", "<!-- compat:end -->"


def update_readme(md):
    p = os.path.join(ROOT, "README.md")
    text = open(p).read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(p, "w") as f:
        f.write(head + BEGIN + "\n" + md + END + tail)
    log("README.md updated")


def write_references(rows):
    out = os.path.join(ROOT, "tests", "fixtures", "export", "subnet")
    for r in rows:
        # A fine-tune's config equals its head-only twin's; the head rows own the reference.
        if r["target"] != "subnet" or r["train"] != "head":
            continue
        d = os.path.join(out, f"{r['fixture']}_{r['preprocess']}")
        os.makedirs(d, exist_ok=True)
        for name in ("config.json", "preprocessor_config.json"):
            shutil.copy(os.path.join(r["export"], name), os.path.join(d, name))
        log(f"wrote {d}")


if __name__ == "__main__":
    sys.exit(main())
