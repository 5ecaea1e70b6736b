"""The evaluation report's presentation: reports/evaluation.md (under its stamp, ops/stamp.py) and
its plots (confusion matrix, accuracy per family, samples of each family's uploads, reliability
diagrams, training curves). train/evaluate.py measures; this module only shows what it measured.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ops import stamp
from synthetic.families import generate

SHOWN_BIN_SHARE = 0.01  # reliability diagrams leave out bins with fewer answers: their accuracy is noise


def samples(digits: np.ndarray, labels: np.ndarray, families: list[str], seed: int, out: Path) -> None:
    """reports/family_samples.png: what each family's uploads look like (8 digits, 42 px cells)."""
    cell = 42
    grid = np.full((len(families) * cell, len(digits) * cell), 255, np.uint8)
    for row, family in enumerate(families):
        for col, data in enumerate(generate(family, digits, seed, labels=labels)):
            image = Image.open(io.BytesIO(data)).convert("RGBA")  # canvas exports: shown on white
            image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image).convert("L")
            image.thumbnail((cell - 4, cell - 4))
            top, left = row * cell + (cell - image.height) // 2, col * cell + (cell - image.width) // 2
            grid[top : top + image.height, left : left + image.width] = np.asarray(image)
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


def plots(report: dict, out: Path) -> None:
    """reports/confusion_matrix.png, families.png and, with a training history, training_curves.png."""
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
    ax.set(
        xticks=range(10),
        yticks=range(10),
        xlabel="predicted",
        ylabel="true",
        title=f"MNIST test confusion (errors coloured), {report['mnist_test']['test_accuracy']:.2%}",
    )
    fig.colorbar(im)
    fig.tight_layout()
    fig.savefig(out / "confusion_matrix.png", dpi=110)
    plt.close(fig)

    families = report["families"]
    fig, ax = plt.subplots(figsize=(13, 4))
    names, xs = list(families), np.arange(len(families))
    for offset, key, label in (
        (-0.27, "unprocessed", "decoded and resized only"),
        (0.0, "primary_view_only", "preprocessing, primary view only"),
        (0.27, "accuracy", "served: preprocessing, most confident candidate view"),
    ):
        ax.bar(xs + offset, [families[n][key] * 100 for n in names], width=0.27, label=label)
    ax.set(ylim=(0, 100), ylabel="accuracy %", title="Accuracy per input family")
    ax.set_xticks(xs, names, rotation=60, ha="right", fontsize=7)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "families.png", dpi=100)
    plt.close(fig)

    if report.get("training"):
        rows = report["training"]["history"]
        epochs = [r["epoch"] for r in rows]
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
        left.plot(epochs, [r["train_loss"] for r in rows], label="train loss")
        left.plot(epochs, [r["test_loss"] for r in rows], label="test loss")
        left.set(xlabel="epoch", title="loss")
        left.legend()
        right.plot(epochs, [r["test_accuracy"] * 100 for r in rows], marker="o")
        right.set(
            xlabel="epoch", ylabel="%", ylim=(98, 100), title="MNIST test accuracy (of the saved weights: EMA when on)"
        )
        fig.tight_layout()
        fig.savefig(out / "training_curves.png", dpi=110)
        plt.close(fig)


def reliability_plots(report: dict, out: Path) -> None:
    """reports/reliability.png: per family, the accuracy of the answers in each confidence bin
    before and after calibration, against the diagonal a calibrated service would follow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = report["families"]
    columns = 6
    rows = -(-len(families) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.1 * rows), sharex=True, sharey=True)
    bins = report["calibration"]["bins"]
    for ax, (name, row) in zip(axes.flat, families.items()):
        calibrated = row["calibration"]
        for key, colour, label in (("reliability_before", "0.6", "network"), ("reliability_after", "C0", "served")):
            cells = [(c, a) for n, c, a in calibrated[key] if n >= SHOWN_BIN_SHARE * calibrated["answers"]]
            ax.plot([c for c, _ in cells], [a for _, a in cells], "o-", color=colour, markersize=2.5, label=label)
        ax.plot([0, 1], [0, 1], ":", color="black", linewidth=0.8)
        ax.set_title(f"{name}\nECE {calibrated['ece_before']:.3f} -> {calibrated['ece_after']:.3f}", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(families) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="upper left")
    fig.suptitle(
        f"Accuracy per confidence bin ({bins} equal-width bins; those with {SHOWN_BIN_SHARE:.0%} of the answers "
        "or more), before and after calibration",
        fontsize=9,
    )
    fig.supxlabel("mean confidence in the bin", fontsize=8)
    fig.supylabel("accuracy in the bin", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=90)
    plt.close(fig)


def calibration_lines(report: dict) -> list[str]:
    """The section on the calibrated confidence: what was applied, and per family what it did."""
    c = report["calibration"]
    temperatures = ", ".join(f"{path} {t:g}" for path, t in c["temperatures"].items())
    line = c["confident"]
    lines = [
        "## Calibrated confidence",
        "",
        "The service answers calibrated probabilities (`handler/calibration.py`): the network's probabilities "
        "p after the choice of view and test-time augmentation become softmax(log p / T), with one temperature "
        f"T per path ({temperatures}) from `{c['file']}`, fitted by `make calibrate` on "
        f"{c['fit_images']:,} training digits read as served (its fit: NLL {c['fit']['nll_before']:.4f} -> "
        f"{c['fit']['nll_after']:.4f}, ECE {c['fit']['ece_before']:.4f} -> {c['fit']['ece_after']:.4f}; the "
        "network was trained on those digits). *ECE*: the answered confidences in "
        f"{c['bins']} equal-width bins, the sum over the bins of the bin's share of the answers times "
        "|accuracy - mean confidence| in it, over the answered images (a refusal has no confidence). "
        f"*Confident*: answers at or above the low-confidence line, {line:g}. *Digits changed*: answers whose "
        "digit calibration changed (0 by construction). `reliability.png`, drawn beside this report, "
        "shows each family's bins.",
        "",
        "| family | answers | accuracy | mean confidence before | after | ECE before | ECE after "
        f"| confident (>= {line:g}) | of those right | digits changed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["families"].items():
        k = row["calibration"]
        right = f"{k['confident_accuracy']:.2%}" if k["confident_accuracy"] is not None else "-"
        lines.append(
            f"| {name} | {k['answers']:,} | {k['accuracy']:.2%} | {k['mean_confidence_before']:.4f} | "
            f"{k['mean_confidence_after']:.4f} | {k['ece_before']:.4f} | {k['ece_after']:.4f} | "
            f"{k['confident_share']:.2%} | {right} | {k['digits_changed']} |"
        )
    return lines + [""]


def markdown(report: dict) -> str:
    """reports/evaluation.md: the stamp, the goals, the families' table, the plots, the training run."""
    test = report["mnist_test"]
    served = report["goals"]["mnist_test"]["measured"]
    tta = report["test_time_augmentation"]
    lines = [
        stamp.line(report["stamp"]),
        "",
        "# Evaluation of the committed weights",
        "",
        f"`{report['weights']}`, {report['parameters']:,} parameters, config `{json.dumps(report['config'])}`.",
        "",
        f"**MNIST test (10,000 images), as served: {served:.2%}**; the network alone (the test tensors, no "
        f"preprocessing, no test-time augmentation): accuracy {test['test_accuracy']:.2%}, "
        f"loss {test['test_loss']:.4f}.",
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
        "Generated from the first MNIST **test** digits (`synthetic/families.py`: synthetic/corruptions.py's "
        "corruptions at a mild and a strong setting, client renderings, printed digits in held-out fonts), "
        "uploaded as bytes. *Served*: the service's preprocessing (`handler/preprocess/`) and, where it "
        "makes several candidate views of an image, the one the network is most confident of, with test-time "
        f"augmentation (answers under {tta['below']:g} are also read turned {tta['degrees']:g} degrees either way "
        "and averaged); *without TTA*: the same without test-time augmentation; *primary view*: the "
        "preprocessing's primary view alone, with test-time augmentation; *unprocessed*: the upload decoded, "
        "converted to grayscale and resized to 28x28 (bilinear), nothing else (no inversion, centring or "
        "denoising), a baseline of the network without the service's preprocessing. TorchServe's stock MNIST "
        "example (`examples/image_classifier/mnist/mnist_handler.py`) does less still: it applies only "
        "`ToTensor()` and `Normalize((0.1307,), (0.3081,))` to the image as decoded, with no grayscale "
        "conversion, no resize, no inversion and no centring, so only uploads that already are 28x28 "
        "single-channel images reach its network in the shape it expects. Refusals (422) count as wrong. "
        f"The printed family used the {len(report.get('held_out_fonts', []))} held-out fonts found on this "
        f"machine ({', '.join(report.get('held_out_fonts', [])) or 'none'}): every fourth installed font by name, "
        "as training splits the fonts of the machine it runs on, so they are fonts training never used only "
        "where both machines had the same fonts (`make fonts`). "
        f"One forward pass of the network costs {report['network_us_per_image']} us per image (batch 16, "
        "one thread, this machine), the price of each extra candidate view.",
        "",
        "| family | images | served | without TTA | primary view | unprocessed | refused | candidate views/img "
        "| preprocess ms/img | what it is |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["families"].items():
        lines.append(
            f"| {name} | {row['images']:,} | {row['accuracy']:.2%} | {row['without_tta']:.2%} | "
            f"{row['primary_view_only']:.2%} | "
            f"{row['unprocessed']:.2%} | {row['refused']} | {row['candidate_views_per_image']} | "
            f"{row['preprocess_ms']} | {row['description']} |"
        )
    denoised = {name: row for name, row in report["families"].items() if "accuracy_without_denoise" in row}
    lines += [
        "",
        "What the denoise step (3x3 median, blur, soft threshold) buys on the noisy families:",
        "",
        "| family | served | without the denoise step |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {row['accuracy']:.2%} | {row['accuracy_without_denoise']:.2%} |" for name, row in denoised.items()
    ]
    lines += [""] + calibration_lines(report)
    lines += [
        "`make evaluate` also draws `families.png` (accuracy per family), `family_samples.png` (what "
        "the uploads look like), `reliability.png` and `confusion_matrix.png` beside this report; they "
        "are not kept in the repository.",
        "",
        "## Confusion matrix (MNIST test; rows: true digit, columns: answered)",
        "",
        "| | " + " | ".join(map(str, range(10))) + " |",
        "|---" * 11 + "|",
    ]
    lines += [
        f"| **{digit}** | " + " | ".join(map(str, row)) + " |" for digit, row in enumerate(report["confusion_matrix"])
    ]
    lines += [""]
    if not report.get("training"):
        lines += [
            "## Training",
            "",
            "No training history: the --train-metrics file was not found "
            "(`make train` writes it; it is not kept in the repository).",
            "",
        ]
    else:
        t = report["training"]
        last = t["history"][-1]
        lines += [
            "## Training",
            "",
            f"Recipe `{json.dumps(t['recipe'])}` on {t['device']} ({t['threads']} threads): "
            f"{len(t['history'])} epochs in {t['wall_seconds'] / 60:.1f} min, "
            f"{np.mean([r['images_per_s'] for r in t['history']]):.0f} images/s; "
            f"final test accuracy {last['test_accuracy']:.2%} (curves: `training_curves.png`, drawn beside "
            "this report).",
            "",
        ]
    return "\n".join(lines)
