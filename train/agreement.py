"""Agreement of two ways of reading: how often they give the same digit on every evaluation family.

Why: preprocessing runs on the worker's device (CPU or CUDA, one torch implementation) and a GPU
worker decodes JPEGs with nvJPEG; both must answer as the CPU does (>= 99.9% identical digits on
every family), and as the numpy implementation they replaced did. This reads the evaluation's own
families (train/evaluate.py's sizes and seed) as the handler reads a batch of requests
(`decode_batch`, then `digit_probabilities` with the served network) and keeps each image's digit; an
image whose request gets an error gets -1.

    python -m train.agreement --against-device cuda                      # CPU against GPU: make agreement
    python -m train.agreement --against-device cuda --gpu-min-pixels 0   # ... small images on the GPU too
    python -m train.agreement --jpeg-on-device --against-device cpu      # the device JPEG path, on the CPU
    python -m train.agreement --save ref.npz --label "numpy path"        # keep this tree's digits
    python -m train.agreement --against ref.npz --label "torch path"     # compare with a saved run
    python -m train.agreement --limit 50 ...                             # 50 images a family, fast
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from handler.inference import digit_probabilities
from handler.preprocess import decode_batch
from handler.preprocess.mnistify import GPU_MIN_PIXELS
from handler.served_model import served_network
from model import DEFAULT_WEIGHTS, load_checkpoint
from ops.stamp import line
from synthetic.families import FAMILIES, generate
from train import evaluate
from train.data import load_mnist

GOAL = 0.999  # share of identical digits each family must reach
REFUSED = -1  # the digit recorded for an image whose request gets an error (4xx or 5xx)
CHUNK = 64  # uploads per batch, as TorchServe hands a worker several requests at once


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, the docstring's examples kept as written."""


def get_args_parser() -> argparse.ArgumentParser:
    defaults = evaluate.get_args_parser()  # the evaluation's sizes and seed
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint to read with")
    p.add_argument("--data-root", default=None, help="folder with MNIST/raw (default: $MNIST_ROOT or ./data)")
    p.add_argument(
        "--per-family",
        type=int,
        default=defaults.get_default("per_family"),
        help="generated images per family, as the evaluation (clean: the whole test set)",
    )
    p.add_argument("--limit", type=int, default=None, help="at most N images per family (clean included): fast path")
    p.add_argument("--seed", type=int, default=defaults.get_default("seed"), help="seed of the generated families")
    p.add_argument("--device", default="cpu", help="device this run preprocesses and reads on")
    p.add_argument(
        "--jpeg-on-device",
        action="store_true",
        help="this run decodes plain JPEGs as a GPU worker does (torchvision's decoder, then reduced), "
        "on --device (default: only on CUDA)",
    )
    p.add_argument(
        "--gpu-min-pixels",
        type=int,
        default=GPU_MIN_PIXELS,
        help="on CUDA, images under this many pixels are preprocessed on the CPU, as the handler does "
        "(0: everything on the GPU)",
    )
    p.add_argument("--label", default=None, help="name of this run in the report and the saved file (None: its device)")
    p.add_argument("--save", default=None, help="write this run's digits and labels to FILE.npz")
    p.add_argument("--against", default=None, help="compare with the digits saved in FILE.npz")
    p.add_argument(
        "--against-device", default=None, help="compare with a second run of this path on DEVICE (e.g. cuda)"
    )
    p.add_argument("--out", default="reports/agreement.md", help="markdown report of the comparison")
    return p


def family_uploads(args: argparse.Namespace) -> dict[str, tuple[list[bytes], np.ndarray]]:
    """{family: (upload bytes, labels)}: the evaluation's families, sizes and seed (evaluate.main)."""
    test_x, test_y = load_mnist(args.data_root, train=False)
    out = {}
    for family, digits, labels in evaluate.evaluation_families(test_x.numpy(), test_y.numpy(), args.per_family):
        count = min(len(digits), args.limit or len(digits))
        out[family] = (generate(family, digits[:count], args.seed, labels=labels[:count]), labels[:count])
    return out


def predict(
    model: torch.nn.Module,
    uploads: list[bytes],
    device: str,
    jpeg_on_device: bool | None,
    gpu_min_pixels: int,
    batch: int = CHUNK,
) -> np.ndarray:
    """Each upload's digit as the handler reads it on `device`, `batch` uploads at a time as one
    TorchServe batch (decode_batch, then digit_probabilities), REFUSED where its request gets an error."""
    digits = np.full(len(uploads), REFUSED, dtype=np.int64)
    for start in range(0, len(uploads), batch):
        decoded = decode_batch(
            [{"body": data} for data in uploads[start : start + batch]], device, jpeg_on_device, gpu_min_pixels
        )
        answered = [start + i for i, outcome in enumerate(decoded.outcomes) if isinstance(outcome, slice)]
        if answered:
            digits[answered] = digit_probabilities(model, decoded.views, device).argmax(1).numpy()
    return digits


def run(
    families: dict, weights: str, device: str, jpeg_on_device: bool | None = None, gpu_min_pixels: int = GPU_MIN_PIXELS
) -> dict[str, np.ndarray]:
    """{family: digits} read with the served network on `device`."""
    model = served_network(load_checkpoint(weights)).to(device)
    out = {}
    for family, (uploads, labels) in families.items():
        out[family] = predict(model, uploads, device, jpeg_on_device, gpu_min_pixels)
        print(
            f"{device:6s} {family:24s} accuracy {np.mean(out[family] == labels):.2%}, "
            f"refused {int(np.sum(out[family] == REFUSED))}",
            flush=True,
        )
    return out


def save(path: str, label: str, digits: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> None:
    np.savez_compressed(
        path, __label__=np.array(label), **digits, **{f"labels/{family}": value for family, value in labels.items()}
    )
    print(f"saved the digits of {len(digits)} families to {path}")


def load(path: str) -> tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(label, {family: digits}, {family: labels}) of a file written by `save`."""
    with np.load(path) as f:
        families = [k for k in f.files if k != "__label__" and not k.startswith("labels/")]
        return str(f["__label__"]), {k: f[k] for k in families}, {k: f[f"labels/{k}"] for k in families}


def report(label: str, other_label: str, digits: dict, other: dict, labels: dict, other_labels: dict) -> str:
    """Markdown table: per family, images, identical digits, their share and each run's accuracy."""
    lines = [
        line(),
        "",
        f"# Agreement: {label} vs {other_label}",
        "",
        f"Digits (argmax of `digit_probabilities`, -1 where refused) of each evaluation family read by "
        f"**{label}** and by **{other_label}**.",
        "",
        f"Goal: >= {GOAL:.1%} identical digits on every family.",
        "",
        f"| family | images | identical | identical % | accuracy ({label}) | accuracy ({other_label}) | met |",
        "|---|---|---|---|---|---|---|",
    ]
    met_all = True
    both = set(digits) | set(other)
    for family in [f for f in FAMILIES if f in both] + sorted(both - set(FAMILIES)):
        if (
            family not in digits
            or family not in other
            or not np.array_equal(labels.get(family), other_labels.get(family))
        ):
            lines.append(f"| {family} | | | | | | NO (not in both runs, or other images) |")
            met_all = False
            continue
        a, b, y = digits[family], other[family], labels[family]
        same = int(np.sum(a == b))
        met = same * 1000 >= round(GOAL * 1000) * len(y)
        met_all &= met
        lines.append(
            f"| {family} | {len(y):,} | {same:,} | {same / len(y):.2%} | {np.mean(a == y):.2%} | "
            f"{np.mean(b == y):.2%} | {'yes' if met else 'NO'} |"
        )
    lines += ["", f"**Every family met the goal: {'yes' if met_all else 'NO'}.**", ""]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    label = args.label or args.device + (", JPEGs decoded as on a GPU" if args.jpeg_on_device else "")
    families = family_uploads(args)
    labels = {family: y for family, (_, y) in families.items()}
    digits = run(families, args.weights, args.device, args.jpeg_on_device or None, args.gpu_min_pixels)
    if args.save:
        save(args.save, label, digits, labels)
    if args.against_device:
        other_label = args.against_device + (", every image preprocessed there" if args.gpu_min_pixels == 0 else "")
        other, other_labels = run(families, args.weights, args.against_device, None, args.gpu_min_pixels), labels
    elif args.against:
        other_label, other, other_labels = load(args.against)
    else:
        return
    text = report(label, other_label, digits, other, labels, other_labels)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    print(f"report in {args.out}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())  # exits 0 either way: the table says whether the goal was met
