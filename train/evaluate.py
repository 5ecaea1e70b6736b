"""Evaluate a checkpoint: MNIST test accuracy and loss, confusion matrix, training curves, and
accuracy per input family (noise, blur, paper photos, canvas exports) through the serving
preprocessing. Writes reports/evaluation.{json,md} and PNG plots.

    python -m train.evaluate                    # the committed weights
    python -m train.evaluate --per-family 500   # fewer generated images per family, faster
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from handler.preprocess import preprocess_bytes, to_batch
from model import DEFAULT_WEIGHTS, model_from_checkpoint
from ops.paths import ROOT
from train.data import batched_logits, load_mnist
from train.families import DESCRIPTIONS, FAMILIES, generate
from train.data import to_input
from train.train import scores

# What the report must show (issue goals): family -> minimum accuracy.
GOALS = {"mnist_test": 0.995, "canvas_export": 0.98, "paper_photo": 0.97, "gaussian_noise": 0.97,
         "salt_and_pepper": 0.97, "blur": 0.97, "speckle": 0.97}
NOISY = ("gaussian_noise", "salt_and_pepper", "speckle")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint to evaluate")
    p.add_argument("--data-root", default=None, help="folder with MNIST/raw (default: $MNIST_ROOT or ./data)")
    p.add_argument("--per-family", type=int, default=2000, help="generated images per family (first N test digits)")
    p.add_argument("--train-metrics", default="reports/train_metrics.json", help="training history to plot")
    p.add_argument("--out", default="reports", help="report folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated families")
    return p


def predict(model, images: list[np.ndarray]) -> np.ndarray:
    """Digits of preprocessed (28, 28) images."""
    return batched_logits(model, images, to_batch).argmax(1).numpy()


def family_accuracy(model, family: str, digits: np.ndarray, labels: np.ndarray, seed: int,
                    denoise_noisy: bool = True) -> dict:
    uploads = generate(family, digits, seed)
    start = time.perf_counter()
    images = [preprocess_bytes(data, denoise_noisy) for data in uploads]
    ms = (time.perf_counter() - start) * 1000 / len(images)
    accuracy = float((predict(model, images) == labels).mean())
    return {"accuracy": accuracy, "images": len(images), "preprocess_ms": round(ms, 3)}


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
              "mnist_test": scores(logits, test_y)}
    report["confusion_matrix"] = confusion(logits.argmax(1), test_y).tolist()

    digits, labels = test_x.numpy(), test_y.numpy()
    n = min(args.per_family, len(digits))
    families = {}
    for family in FAMILIES:
        count = len(digits) if family == "clean" else n
        families[family] = family_accuracy(model, family, digits[:count], labels[:count], args.seed)
        families[family]["description"] = DESCRIPTIONS[family]
        if family in NOISY:  # what the card's denoising (blur + threshold) adds
            families[family]["accuracy_without_denoise"] = family_accuracy(
                model, family, digits[:count], labels[:count], args.seed, denoise_noisy=False)["accuracy"]
        print(f"{family:16s} {families[family]['accuracy']:.2%}", flush=True)
    report["families"] = families
    report["goals"] = {name: {"goal": goal, "measured": _measured(report, name),
                              "met": _measured(report, name) >= goal} for name, goal in GOALS.items()}

    history = _history(args.train_metrics)
    if history:
        report["training"] = history
    _plots(report, out)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "evaluation.md").write_text(_markdown(report))
    print(f"MNIST test accuracy {report['mnist_test']['test_accuracy']:.2%}, "
          f"loss {report['mnist_test']['test_loss']:.4f}; report in {out}/evaluation.md")
    return report


def _measured(report: dict, name: str) -> float:
    return report["mnist_test"]["test_accuracy"] if name == "mnist_test" else report["families"][name]["accuracy"]


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
    fig, ax = plt.subplots(figsize=(10, 3.5))
    names = list(families)
    ax.bar(names, [families[n]["accuracy"] * 100 for n in names], color="tab:blue", label="served preprocessing")
    ax.bar(names, [families[n].get("accuracy_without_denoise", np.nan) * 100 for n in names],
           color="tab:orange", width=0.4, label="without the denoise step")
    ax.set(ylim=(70, 100), ylabel="accuracy %", title="Accuracy per input family")
    ax.tick_params(axis="x", rotation=20)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "families.png", dpi=110)
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
    lines = [
        "# Evaluation of the committed weights",
        "",
        f"`{report['weights']}`, {report['parameters']:,} parameters, config `{json.dumps(report['config'])}`.",
        "",
        f"**MNIST test (10,000 images): accuracy {test['test_accuracy']:.2%}, loss {test['test_loss']:.4f}.**",
        "",
        "## Goals",
        "",
        "| set | goal | measured | met |",
        "|---|---|---|---|",
    ]
    for name, goal in report["goals"].items():
        lines.append(f"| {name} | {goal['goal']:.1%} | {goal['measured']:.2%} | {'yes' if goal['met'] else 'NO'} |")
    lines += [
        "",
        "## Input families",
        "",
        "Generated from the first MNIST **test** digits (`train/families.py`), uploaded as bytes and "
        "read through the serving preprocessing (`handler/preprocess/`).",
        "",
        "| family | images | accuracy | without denoise | preprocess ms/img | what it is |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["families"].items():
        without = row.get("accuracy_without_denoise")
        lines.append(f"| {name} | {row['images']:,} | {row['accuracy']:.2%} | "
                     f"{'' if without is None else f'{without:.2%}'} | {row['preprocess_ms']} | {row['description']} |")
    lines += ["", "![families](families.png)", "", "## Confusion matrix (MNIST test)", "",
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
