"""Evaluate a checkpoint: MNIST test accuracy and loss, confusion matrix, training curves, and
accuracy per input family (synthetic/families.py) read as the service reads it, beside what each
preprocessing step buys. Writes reports/evaluation.{json,md} and PNG plots.

    python -m train.evaluate                    # the committed weights
    python -m train.evaluate --per-family 500   # fewer generated images per family, faster
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
from handler.preprocess import read_digits, readings_bytes
from model import DEFAULT_WEIGHTS, model_from_checkpoint, served_network
from ops.paths import ROOT
from train.data import EVAL_BATCH, batched_logits, load_mnist, to_input
from synthetic.families import DESCRIPTIONS, FAMILIES, KINDS, generate
from synthetic.fonts import fonts_available
from train.train import scores

# What the report must show (issue goals): set -> minimum accuracy.
GOALS = {"mnist_test": 0.995, "canvas_export": 0.98, "paper_photo": 0.97, "gaussian_noise": 0.97,
         "salt_and_pepper": 0.97, "blur": 0.97, "speckle": 0.97, "printed": 0.98, "rescan_8px": 0.95}
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
    return p


def read_uploads(model, uploads: list[bytes], labels: np.ndarray, multiple: bool = True,
                 denoise_noisy: bool = True) -> dict:
    """Accuracy of the uploads read as the handler reads them (refusals count as wrong), the same
    without the second look, refusals, readings per image, and the preprocessing's cost per image
    on this machine."""
    readings, kept, refused = [], [], 0
    start = time.perf_counter()
    for i, data in enumerate(uploads):
        try:
            readings.append(readings_bytes(data, denoise_noisy, multiple))
            kept.append(i)
        except InputError:
            refused += 1
    ms = (time.perf_counter() - start) * 1000 / len(uploads)

    def accuracy(look_again: bool) -> float:
        if not readings:
            return 0.0
        digits = torch.cat([read_digits(model, readings[i:i + EVAL_BATCH], look_again=look_again)
                            for i in range(0, len(readings), EVAL_BATCH)]).argmax(1).numpy()
        return float((digits == labels[kept]).sum() / len(uploads))

    return {"accuracy": accuracy(True), "one_look": accuracy(False), "refused": refused,
            "readings_per_image": round(sum(map(len, readings)) / max(1, len(readings)), 2),
            "preprocess_ms": round(ms, 3)}


def unprocessed_accuracy(model, uploads: list[bytes], labels: np.ndarray) -> float:
    """The uploads decoded to grayscale and resized to 28x28, nothing else: what a handler without
    preprocessing (such as TorchServe's MNIST example) gives the network."""
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
    row["primary_reading_only"] = read_uploads(model, uploads, labels, multiple=False)["accuracy"]
    row["unprocessed"] = unprocessed_accuracy(model, uploads, labels)
    if family in NOISY:  # what the card's denoising (blur + threshold) adds
        row["accuracy_without_denoise"] = read_uploads(model, uploads, labels, denoise_noisy=False)["accuracy"]
    return row | {"images": len(uploads), "description": DESCRIPTIONS[family]}


def network_cost(model, batch: int = 16, repeats: int = 300) -> float:
    """Microseconds per image of one forward pass of the served network (BatchNorm folded,
    channels-last) on one thread, batches of `batch`: the cost of each extra reading."""
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
    report = {"weights": str(weights.relative_to(ROOT) if weights.is_relative_to(ROOT) else weights),
              "config": checkpoint["config"], "recipe": checkpoint.get("recipe"),
              "parameters": sum(p.numel() for p in model.parameters()),
              "network_us_per_image": network_cost(model),
              "mnist_test": scores(logits, test_y)}
    report["confusion_matrix"] = confusion(logits.argmax(1), test_y).tolist()

    digits, labels = test_x.numpy(), test_y.numpy()
    families = {}
    for family, family_digits, family_labels in evaluation_families(digits, labels, args.per_family):
        families[family] = family_report(model, family, family_digits, family_labels, args.seed)
        row = families[family]
        print(f"{family:24s} {row['accuracy']:.2%} (primary reading only {row['primary_reading_only']:.2%}, "
              f"unprocessed {row['unprocessed']:.2%}, refused {row['refused']})", flush=True)
    report["families"] = families
    report["goals"] = _goals(report)
    _samples(digits[:8], labels[:8], [f for f in FAMILIES if f in families], args.seed, out)

    history = _history(args.train_metrics)
    if history:
        report["training"] = history
    _plots(report, out)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "evaluation.md").write_text(_markdown(report))
    print(f"MNIST test accuracy {report['mnist_test']['test_accuracy']:.2%}, "
          f"loss {report['mnist_test']['test_loss']:.4f}; report in {out}/evaluation.md")
    return report


def _samples(digits: np.ndarray, labels: np.ndarray, families: list[str], seed: int, out: Path) -> None:
    """reports/family_samples.png: what each family's uploads look like (8 digits, 42 px cells)."""
    cell = 42
    grid = np.full((len(families) * cell, len(digits) * cell), 255, np.uint8)
    for row, family in enumerate(families):
        for col, data in enumerate(generate(family, digits, seed, labels=labels)):
            image = Image.open(io.BytesIO(data)).convert("RGBA")  # canvas exports: shown on white
            image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image).convert("L")
            image.thumbnail((cell - 4, cell - 4))
            top, left = row * cell + (cell - image.height) // 2, col * cell + (cell - image.width) // 2
            grid[top:top + image.height, left:left + image.width] = np.asarray(image)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, len(families) * 0.33 + 0.5))
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255)
    ax.set_yticks(np.arange(len(families)) * cell + cell / 2, families, fontsize=7)
    ax.set_xticks([])
    ax.set_title("uploads per family (first 8 test digits)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "family_samples.png", dpi=100)
    plt.close(fig)


def _goals(report: dict) -> dict:
    families = report["families"]
    # The service's answers on the MNIST test set: the clean family (all 10,000, as PNG uploads).
    measured = {"mnist_test": families.get("clean", {}).get("accuracy", report["mnist_test"]["test_accuracy"])}
    measured |= {name: families[name]["accuracy"] for name in GOALS if name in families}
    goals = {name: (GOALS[name], value) for name, value in measured.items()}
    for setting in ("mild", "strong"):  # the goal names "a strength a person still reads easily"
        kinds = {kind: families[names[setting]]["accuracy"] for kind, names in KINDS.items()
                 if names[setting] in families}
        goals |= {f"{kind}, {setting} ({KINDS[kind][setting]})": (max(KIND_GOAL, GOALS.get(KINDS[kind][setting], 0)), value)
                  for kind, value in kinds.items()}
        goals[f"mean of the {len(kinds)} kinds, {setting}"] = (KINDS_MEAN_GOAL, float(np.mean(list(kinds.values()))))
    out = {name: {"goal": goal, "measured": value, "met": value >= goal} for name, (goal, value) in goals.items()}
    refused = sum(row["refused"] for row in families.values())
    out["legible digits refused (all families)"] = {"goal": 0, "measured": refused, "met": refused == 0}
    return out


def _history(path: str) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return {k: metrics.get(k) for k in ("recipe", "device", "threads", "wall_seconds", "history")}


def _plots(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(report["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(6, 5))
    shown = np.where(np.eye(10, dtype=bool), 0, matrix)  # colour the errors, not the diagonal
    im = ax.imshow(shown, cmap="Reds")
    for i in range(10):
        for j in range(10):
            ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7)
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true",
           title=f"MNIST test confusion (errors coloured), {report['mnist_test']['test_accuracy']:.2%}")
    fig.colorbar(im)
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=110)
    plt.close(fig)

    families = report["families"]
    fig, ax = plt.subplots(figsize=(13, 4))
    names, xs = list(families), np.arange(len(families))
    for offset, key, label in ((-0.27, "unprocessed", "decoded and resized only"),
                               (0.0, "primary_reading_only", "preprocessing, one reading"),
                               (0.27, "accuracy", "served: preprocessing, surest reading")):
        ax.bar(xs + offset, [families[n][key] * 100 for n in names], width=0.27, label=label)
    ax.set(ylim=(0, 100), ylabel="accuracy %", title="Accuracy per input family")
    ax.set_xticks(xs, names, rotation=60, ha="right", fontsize=7)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "families.png", dpi=100)
    plt.close(fig)

    if "training" in report:
        rows = report["training"]["history"]
        epochs = [r["epoch"] for r in rows]
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
        left.plot(epochs, [r["train_loss"] for r in rows], label="train loss")
        left.plot(epochs, [r["test_loss"] for r in rows], label="test loss")
        left.set(xlabel="epoch", title="loss")
        left.legend()
        right.plot(epochs, [r["test_accuracy"] * 100 for r in rows], marker="o")
        right.set(xlabel="epoch", ylabel="%", ylim=(98, 100),
                  title="MNIST test accuracy (of the saved weights: EMA when on)")
        fig.tight_layout()
        fig.savefig(out / "training_curves.png", dpi=110)
        plt.close(fig)


def _markdown(report: dict) -> str:
    test = report["mnist_test"]
    served = report["goals"]["mnist_test"]["measured"]
    lines = [
        "# Evaluation of the committed weights",
        "",
        f"`{report['weights']}`, {report['parameters']:,} parameters, config `{json.dumps(report['config'])}`.",
        "",
        f"**MNIST test (10,000 images), as served: {served:.2%}**; the network alone (the test tensors, no "
        f"preprocessing, no second look): accuracy {test['test_accuracy']:.2%}, loss {test['test_loss']:.4f}.",
        "",
        "## Goals",
        "",
        "| set | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for name, goal in report["goals"].items():
        fmt = (lambda v: f"{v:,}") if isinstance(goal["goal"], int) else (lambda v: f"{v:.2%}")
        lines.append(f"| {name} | {fmt(goal['goal'])} | {fmt(goal['measured'])} | {'yes' if goal['met'] else 'NO'} |")
    lines += [
        "",
        "## Input families",
        "",
        "Generated from the first MNIST **test** digits (`train/families.py`: train/augment.py's corruptions "
        "at a mild and a strong setting, client renderings, printed digits in fonts training never used), "
        "uploaded as bytes. *Served*: the service's preprocessing (`handler/preprocess/`) and, where it makes "
        "several readings of an image, the one the network is surest of; *one reading*: its primary reading "
        "alone; *unprocessed*: decoded to grayscale and resized to 28x28, nothing else (what a handler without "
        "preprocessing, such as TorchServe's MNIST example, does); *one look*: served without the second look "
        "(answers under 0.6 are also read turned 10 degrees either way, `batch.second_look`). Refusals (422) "
        "count as wrong. "
        f"One forward pass of the network costs {report['network_us_per_image']} us per image (batch 16, "
        "one thread, this machine), the price of each extra reading.",
        "",
        "| family | images | served | one look | one reading | unprocessed | refused | readings/img | preprocess ms/img | what it is |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["families"].items():
        lines.append(f"| {name} | {row['images']:,} | {row['accuracy']:.2%} | {row['one_look']:.2%} | "
                     f"{row['primary_reading_only']:.2%} | "
                     f"{row['unprocessed']:.2%} | {row['refused']} | {row['readings_per_image']} | "
                     f"{row['preprocess_ms']} | {row['description']} |")
    denoised = {name: row for name, row in report["families"].items() if "accuracy_without_denoise" in row}
    lines += ["", "What the denoise step (3x3 median, blur, soft threshold) buys on the noisy families:", "",
              "| family | served | without the denoise step |", "|---|---|---|"]
    lines += [f"| {name} | {row['accuracy']:.2%} | {row['accuracy_without_denoise']:.2%} |" for name, row in denoised.items()]
    lines += ["", "![families](families.png)", "", "What the uploads look like:", "",
              "![samples of each family](family_samples.png)", "", "## Confusion matrix (MNIST test)", "",
              "![confusion matrix](confusion_matrix.png)", ""]
    if "training" in report:
        t = report["training"]
        last = t["history"][-1]
        lines += ["## Training", "",
                  f"Recipe `{json.dumps(t['recipe'])}` on {t['device']} ({t['threads']} threads): "
                  f"{len(t['history'])} epochs in {t['wall_seconds'] / 60:.1f} min, "
                  f"{np.mean([r['images_per_s'] for r in t['history']]):.0f} images/s; "
                  f"final test accuracy {last['test_accuracy']:.2%}.", "",
                  "![training curves](training_curves.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
