"""Evaluate a checkpoint: MNIST test accuracy and loss, confusion matrix, training curves, and
accuracy per input family (synthetic/families.py) read as the service reads it, beside what each
preprocessing step buys. Writes reports/evaluation.{json,md} (stamped, ops/stamp.py) and PNG plots
(train/evaluate_report.py draws and writes them).

    python -m train.evaluate                    # the committed weights
    python -m train.evaluate --per-family 500   # fewer generated images per family, faster
    python -m train.evaluate --numbers 200      # fewer numbers per number family (the Numbers section)
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from handler.errors import InputError
from handler.inference import TTA_BELOW, TTA_DEGREES, digit_probabilities
from handler.preprocess.mnistify import views_of_bytes
from handler.served_model import served_network
from model import DEFAULT_WEIGHTS, model_from_checkpoint
from ops.paths import ROOT
from ops.stamp import stamp
from synthetic.families import DESCRIPTIONS, FAMILIES, KINDS, generate
from synthetic.fonts import font_files, fonts_available, split_fonts
from train.data import EVAL_BATCH, batched_logits, load_mnist, to_input
from train.evaluate_numbers import markdown as numbers_markdown
from train.evaluate_numbers import numbers_report
from train.evaluate_report import markdown, plots, samples
from train.train import scores

# What the report must show: set -> minimum accuracy.
GOALS = {
    "mnist_test": 0.995,
    "canvas_export": 0.98,
    "paper_photo": 0.97,
    "gaussian_noise": 0.97,
    "salt_and_pepper": 0.97,
    "blur": 0.97,
    "speckle": 0.97,
    "printed": 0.98,
    "rescan_8px": 0.95,
}
KIND_GOAL, KINDS_MEAN_GOAL = 0.95, 0.97  # each of the nine kinds, and their mean
NOISY = ("gaussian_noise", "salt_and_pepper", "speckle", "speckle_strong")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint to evaluate")
    p.add_argument("--data-root", default=None, help="folder with MNIST/raw (default: $MNIST_ROOT or ./data)")
    p.add_argument("--per-family", type=int, default=2000, help="generated images per family (first N test digits)")
    p.add_argument("--train-metrics", default="reports/train_metrics.json", help="training history to plot")
    p.add_argument("--out", default="reports", help="report folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated families")
    p.add_argument("--numbers", type=int, default=500, help="numbers per number family (0: no Numbers section)")
    return p


def read_uploads(
    model, uploads: list[bytes], labels: np.ndarray, multiple: bool = True, denoise_noisy: bool = True
) -> dict:
    """Accuracy of the uploads read as the handler reads them (refusals count as wrong), the same
    without test-time augmentation, refusals, candidate views per image, and the preprocessing's
    cost per image on this machine."""
    views, kept, refused = [], [], 0  # each upload's candidate views
    start = time.perf_counter()
    for i, data in enumerate(uploads):
        try:
            views.append(views_of_bytes(data, denoise_noisy, multiple))
            kept.append(i)
        except InputError:
            refused += 1
    ms = (time.perf_counter() - start) * 1000 / len(uploads)

    def accuracy(tta: bool) -> float:
        if not views:
            return 0.0
        tta_below = TTA_BELOW if tta else None
        digits = (
            torch.cat(
                [
                    digit_probabilities(model, views[i : i + EVAL_BATCH], tta_below=tta_below)
                    for i in range(0, len(views), EVAL_BATCH)
                ]
            )
            .argmax(1)
            .numpy()
        )
        return float((digits == labels[kept]).sum() / len(uploads))

    return {
        "accuracy": accuracy(True),
        "without_tta": accuracy(False),
        "refused": refused,
        "candidate_views_per_image": round(sum(map(len, views)) / max(1, len(views)), 2),
        "preprocess_ms": round(ms, 3),
    }


def unprocessed_accuracy(model, uploads: list[bytes], labels: np.ndarray) -> float:
    """The uploads decoded, converted to grayscale and resized to 28x28 (bilinear), scaled to [0, 1],
    nothing else (no inversion, centring or denoising): a baseline of the network without the
    service's preprocessing. Not TorchServe's stock MNIST example, which does less still (only
    ToTensor and Normalize on the decoded image: no grayscale conversion, no resize)."""

    def pixels(data: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(data)).convert("L").resize((28, 28), Image.BILINEAR)
        return np.asarray(image, dtype=np.float32) / 255

    x = torch.from_numpy(np.stack([pixels(d) for d in uploads]))
    return float((batched_logits(model, x, lambda b: b[:, None]).argmax(1).numpy() == labels).mean())


def evaluation_families(digits: np.ndarray, labels: np.ndarray, per_family: int):
    """(family, its test digits, their labels) for each family the evaluation reads: the whole test
    set for clean, the first `per_family` for the others; printed only where fonts are installed."""
    for family in FAMILIES:
        if family == "printed" and not fonts_available():
            print("printed: skipped, no fonts under /usr/share/fonts", flush=True)
            continue
        count = len(digits) if family == "clean" else min(per_family, len(digits))
        yield family, digits[:count], labels[:count]


def family_report(model, family: str, digits: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    uploads = generate(family, digits, seed, labels=labels)
    row = read_uploads(model, uploads, labels)
    row["primary_view_only"] = read_uploads(model, uploads, labels, multiple=False)["accuracy"]
    row["unprocessed"] = unprocessed_accuracy(model, uploads, labels)
    if family in NOISY:  # what the model card's denoising (blur + threshold) adds
        row["accuracy_without_denoise"] = read_uploads(model, uploads, labels, denoise_noisy=False)["accuracy"]
    return row | {"images": len(uploads), "description": DESCRIPTIONS[family]}


def network_cost(model, batch: int = 16, repeats: int = 300) -> float:
    """Microseconds per image of one forward pass of the served network (BatchNorm folded,
    channels-last) on one thread, batches of `batch`: the cost of each extra candidate view."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    served, x = served_network(model), torch.zeros(batch, 1, 28, 28)
    with torch.inference_mode():
        for _ in range(20):
            served(x)
        start = time.perf_counter()
        for _ in range(repeats):
            served(x)
    torch.set_num_threads(threads)
    return round((time.perf_counter() - start) / (repeats * batch) * 1e6, 1)


def confusion(predicted: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    matrix = np.zeros((10, 10), dtype=int)
    np.add.at(matrix, (labels.numpy(), predicted.numpy()), 1)
    return matrix


def main(args: argparse.Namespace) -> dict:
    checkpoint = torch.load(args.weights, map_location="cpu", weights_only=True)  # read once
    model = model_from_checkpoint(checkpoint)
    test_x, test_y = load_mnist(args.data_root, train=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    logits = batched_logits(model, test_x, to_input)  # the test set, once
    weights = Path(args.weights).resolve()
    report = {
        "stamp": stamp(),
        "weights": str(weights.relative_to(ROOT) if weights.is_relative_to(ROOT) else weights),
        "config": checkpoint["config"],
        "recipe": checkpoint.get("recipe"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "network_us_per_image": network_cost(model),
        "test_time_augmentation": {"below": TTA_BELOW, "degrees": TTA_DEGREES},
        "mnist_test": scores(logits, test_y),
    }
    report["confusion_matrix"] = confusion(logits.argmax(1), test_y).tolist()

    digits, labels = test_x.numpy(), test_y.numpy()
    families = {}
    for family, family_digits, family_labels in evaluation_families(digits, labels, args.per_family):
        families[family] = family_report(model, family, family_digits, family_labels, args.seed)
        row = families[family]
        print(
            f"{family:24s} {row['accuracy']:.2%} (primary view only {row['primary_view_only']:.2%}, "
            f"unprocessed {row['unprocessed']:.2%}, refused {row['refused']})",
            flush=True,
        )
    report["families"] = families
    report["held_out_fonts"] = [path.name for path in split_fonts(font_files())[1]]  # the printed family's
    report["goals"] = _goals(report)
    if args.numbers:  # the number model (train/evaluate_numbers.py), from the same test digits
        report["numbers"] = numbers_report(model, digits, labels, args.numbers, args.seed)
        report["goals"] |= report["numbers"]["goals"]
    samples(digits[:8], labels[:8], [f for f in FAMILIES if f in families], args.seed, out)

    report["training"] = _history(args.train_metrics)  # None: no training history
    plots(report, out)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    numbers = ["", *numbers_markdown(report["numbers"])] if "numbers" in report else []
    (out / "evaluation.md").write_text(markdown(report) + "\n".join(numbers))
    print(
        f"MNIST test accuracy {report['mnist_test']['test_accuracy']:.2%}, "
        f"loss {report['mnist_test']['test_loss']:.4f}; report in {out}/evaluation.md"
    )
    return report


def _goals(report: dict) -> dict:
    families = report["families"]
    # The service's answers on the MNIST test set: the clean family (all 10,000, as PNG uploads).
    measured = {"mnist_test": families.get("clean", {}).get("accuracy", report["mnist_test"]["test_accuracy"])}
    measured |= {name: families[name]["accuracy"] for name in GOALS if name in families}
    goals = {name: (GOALS[name], value) for name, value in measured.items()}
    for setting in ("mild", "strong"):  # the goal names "a strength a person still reads easily"
        kinds = {
            kind: families[names[setting]]["accuracy"] for kind, names in KINDS.items() if names[setting] in families
        }
        goals |= {
            f"{kind}, {setting} ({KINDS[kind][setting]})": (max(KIND_GOAL, GOALS.get(KINDS[kind][setting], 0)), value)
            for kind, value in kinds.items()
        }
        goals[f"mean of the {len(kinds)} kinds, {setting}"] = (KINDS_MEAN_GOAL, float(np.mean(list(kinds.values()))))
    out = {name: {"goal": goal, "measured": value, "met": value >= goal} for name, (goal, value) in goals.items()}
    refused = sum(row["refused"] for row in families.values())
    out["legible digits refused (all families)"] = {"goal": 0, "measured": refused, "met": refused == 0}
    return out


def _history(path: str) -> dict | None:
    """The training run's recipe, device and per-epoch metrics from train.train's --metrics file;
    None when there is none (it is written by `make train`, not kept in the repository)."""
    path = Path(path)
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return {k: metrics.get(k) for k in ("recipe", "device", "threads", "wall_seconds", "history")}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
