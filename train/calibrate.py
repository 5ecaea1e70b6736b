"""Fit the served confidence's calibration (handler/calibration.py) and write model/calibration.json.

    python -m train.calibrate                   # the committed weights, 2,000 images per family
    python -m train.calibrate --per-family 500  # a quicker, coarser fit

The fit set: for every evaluation family (synthetic/families.py), its corruption or rendering
applied to MNIST *training* digits drawn at random, with seeds of its own (the evaluation's
families are made from test digits), printed digits in the training fonts (the held-out ones stay
the evaluation's). Each upload is read exactly as served: the handler's preprocessing, the most
confident candidate view, test-time augmentation (handler/inference.py, read_views). One
temperature per path minimizes the negative log-likelihood of the right digit.

The network was trained on all 60,000 training digits, so no fit digit is unseen: on the hardest
families the network reads them better than digits it never saw, and the fitted temperatures are
a little too confident there (reports/evaluation.md measures the transfer to the test families).

Also the calibration measures the evaluation reports (train/evaluate.py): the expected
calibration error and the reliability bins.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from handler.calibration import CALIBRATION_FILE, PATHS, Calibration, file_digest
from handler.errors import InputError
from handler.inference import TTA_BELOW, read_views
from handler.preprocess.mnistify import views_of_bytes
from handler.served_model import served_network
from handler.settings import HandlerSettings
from model import DEFAULT_WEIGHTS, load_checkpoint
from ops.paths import ROOT
from ops.stamp import stamp
from synthetic.families import FAMILIES, generate, printed
from synthetic.fonts import font_files, fonts_available, split_fonts
from train.data import EVAL_BATCH, load_mnist

ECE_BINS = 15  # equal-width bins of the answered confidence
CONFIDENT = HandlerSettings().low_confidence  # the low-confidence line: answers at or above it are "confident"
BETA_RANGE = (0.05, 20.0)  # 1 / temperature searched in this range


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint to calibrate")
    p.add_argument("--data-root", default=None, help="folder with MNIST/raw (default: $MNIST_ROOT or ./data)")
    p.add_argument("--per-family", type=int, default=2000, help="training digits drawn per family")
    p.add_argument("--seed", type=int, default=1, help="draws the digits; family k is generated with seed * 1000 + k")
    p.add_argument("--out", default=str(ROOT / CALIBRATION_FILE), help="where to write the calibration")
    return p


# ------------------------------------------------------------------ reading as served


def views_of_uploads(uploads: list[bytes], denoise_noisy: bool = True, multiple: bool = True) -> tuple[list, list]:
    """Each readable upload's candidate views (handler/preprocess), and the indices of those read
    (the others are refused, as the service would)."""
    views, kept = [], []
    for i, data in enumerate(uploads):
        try:
            views.append(views_of_bytes(data, denoise_noisy, multiple))
            kept.append(i)
        except InputError:
            pass
    return views, kept


def served_probabilities(model, views: list, tta_below: float | None = TTA_BELOW) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 10) probabilities as the service computes them before calibration (most confident
    view, TTA) and (N,) each image's calibration path, EVAL_BATCH images at a time."""
    probabilities, paths = [], []
    for i in range(0, len(views), EVAL_BATCH):
        p, _, path = read_views(model, views[i : i + EVAL_BATCH], tta_below=tta_below)
        probabilities.append(p)
        paths.append(torch.zeros(len(p), dtype=torch.long) if path is None else path)
    if not probabilities:
        return torch.zeros(0, 10), torch.zeros(0, dtype=torch.long)
    return torch.cat(probabilities), torch.cat(paths)


# ------------------------------------------------------------------ measures


def nll(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of the right digit."""
    p = probabilities.double().gather(1, labels[:, None]).clamp_min(1e-300)
    return float(-p.log().mean()) if len(labels) else 0.0


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[tuple[int, float, float]]:
    """Per equal-width bin of the confidence ((i / bins, (i + 1) / bins]): answers, mean
    confidence, accuracy (0, 0, 0 where empty)."""
    index = np.clip(np.ceil(np.asarray(confidence, np.float64) * bins).astype(int) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        out.append((n, float(confidence[inside].mean()) if n else 0.0, float(correct[inside].mean()) if n else 0.0))
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over the bins of (answers in the bin / all) * |accuracy - mean confidence|."""
    total = len(confidence)
    return sum(n / total * abs(accuracy - mean) for n, mean, accuracy in reliability(confidence, correct, bins) if n)


def calibration_stats(raw: torch.Tensor, calibrated: torch.Tensor, labels: torch.Tensor) -> dict:
    """Answered images' ECE and NLL before and after calibration, the share of answers at or above
    the low-confidence line and how many of those are right, and the digits calibration changed
    (must be 0)."""
    correct = (raw.argmax(1) == labels).numpy()
    before, after = raw.amax(1).numpy(), calibrated.amax(1).numpy()
    confident = after >= CONFIDENT
    return {
        "answers": len(labels),
        "accuracy": float(correct.mean()) if len(correct) else 0.0,
        "ece_before": expected_calibration_error(before, correct),
        "ece_after": expected_calibration_error(after, correct),
        "nll_before": nll(raw, labels),
        "nll_after": nll(calibrated, labels),
        "mean_confidence_before": float(before.mean()) if len(before) else 0.0,
        "mean_confidence_after": float(after.mean()) if len(after) else 0.0,
        "confident_share": float(confident.mean()) if len(confident) else 0.0,
        "confident_accuracy": float(correct[confident].mean()) if confident.any() else None,
        "digits_changed": int((raw.argmax(1) != calibrated.argmax(1)).sum()),
    }


# ------------------------------------------------------------------ the fit


def fit_temperature(probabilities: torch.Tensor, labels: torch.Tensor, steps: int = 80) -> float:
    """The temperature T minimizing the NLL of softmax(log p / T): a golden-section search over
    beta = 1 / T, in which the NLL is convex (a log-sum-exp of beta times fixed vectors, minus a
    linear term)."""
    log_p = probabilities.double().clamp_min(1e-300).log()

    def loss(beta: float) -> float:
        z = log_p * beta
        return float((torch.logsumexp(z, 1) - z.gather(1, labels[:, None])[:, 0]).mean())

    lo, hi = BETA_RANGE
    ratio = (5**0.5 - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(steps):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return 1 / ((lo + hi) / 2)


def fit(probabilities: torch.Tensor, paths: torch.Tensor, labels: torch.Tensor) -> Calibration:
    """One temperature per path; a path the fit set never took gets the temperature of all."""
    pooled = fit_temperature(probabilities, labels)
    temperatures = []
    for index in range(len(PATHS)):
        on_path = paths == index
        temperatures.append(fit_temperature(probabilities[on_path], labels[on_path]) if on_path.any() else pooled)
    return Calibration(tuple(round(t, 4) for t in temperatures))


def fit_set(per_family: int, seed: int, data_root: str | None = None):
    """(family, its uploads, their labels) for each family, made from training digits."""
    train_x, train_y = load_mnist(data_root, train=True)
    digits, labels = train_x.numpy(), train_y.numpy()
    rng = np.random.default_rng(seed)
    for k, family in enumerate(FAMILIES):
        chosen = rng.choice(len(digits), per_family, replace=False)
        family_seed = seed * 1000 + k
        if family == "printed":
            if not fonts_available():
                print("printed: skipped, no fonts under /usr/share/fonts", flush=True)
                continue
            training_fonts = split_fonts(font_files())[0]
            uploads = printed(labels[chosen], np.random.default_rng(family_seed), training_fonts)
        else:
            uploads = generate(family, digits[chosen], family_seed, labels=labels[chosen])
        yield family, uploads, labels[chosen]


def main(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    weights = Path(args.weights).resolve()
    model = served_network(load_checkpoint(weights)).eval()  # the network as the handler runs it
    probabilities, paths, labels, families, refused = [], [], [], {}, 0
    for family, uploads, family_labels in fit_set(args.per_family, args.seed, args.data_root):
        views, kept = views_of_uploads(uploads)
        refused += len(uploads) - len(kept)
        p, path = served_probabilities(model, views)
        probabilities.append(p)
        paths.append(path)
        labels.append(torch.from_numpy(family_labels[kept]))
        families[family] = len(kept)
        print(f"{family:24s} {len(kept)} read, accuracy {(p.argmax(1) == labels[-1]).float().mean():.2%}", flush=True)
    probabilities, paths, labels = torch.cat(probabilities), torch.cat(paths), torch.cat(labels)
    calibration = fit(probabilities, paths, labels)
    result = _record(args, weights, calibration, probabilities, paths, labels, families, refused)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"temperatures {calibration.as_dict()}; fit NLL {result['fit']['nll_before']:.4f} -> "
        f"{result['fit']['nll_after']:.4f}, ECE {result['fit']['ece_before']:.4f} -> "
        f"{result['fit']['ece_after']:.4f}; {time.perf_counter() - start:.0f} s; written to {args.out}"
    )
    return result


_PATH_STATS = ("answers", "accuracy", "nll_before", "nll_after", "ece_before", "ece_after")


def _record(args, weights: Path, calibration: Calibration, probabilities, paths, labels, families, refused) -> dict:
    """model/calibration.json: the temperatures, the weights they are for, how they were fitted."""
    calibrated = calibration(probabilities, paths)
    per_path = {}
    for index, name in enumerate(PATHS):
        on_path = paths == index
        stats = calibration_stats(probabilities[on_path], calibrated[on_path], labels[on_path])
        per_path[name] = {k: stats[k] for k in _PATH_STATS}
    return {
        "stamp": stamp(),
        "method": "temperature scaling per path: softmax(log p / T) of the served probabilities "
        "(handler/calibration.py)",
        "temperatures": calibration.as_dict(),
        "weights": str(weights.relative_to(ROOT) if weights.is_relative_to(ROOT) else weights),
        "weights_sha256": file_digest(weights),
        "fit_set": {
            "digits": "MNIST training split, drawn at random per family; the network was trained on all 60,000",
            "families": families,
            "images_per_family": args.per_family,
            "seed": args.seed,
            "family_seed": "seed * 1000 + the family's index in synthetic.families.FAMILIES",
            "printed_fonts": "the training fonts (synthetic.fonts.split_fonts)",
            "images": len(labels),
            "refused": refused,
            "read": "as served: handler/preprocess, most confident candidate view, test-time augmentation",
        },
        "fit": calibration_stats(probabilities, calibrated, labels) | {"per_path": per_path},
    }


if __name__ == "__main__":
    main(get_args_parser().parse_args())
