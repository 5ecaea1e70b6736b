"""Train the line reader (model/line_network.py) with CTC and write model/line_reader.pt.

    python -m train.line_reader                           # about 45 minutes on two CPU cores
    python -m train.line_reader --lines 2000 --epochs 1   # a quick try

Its lines are the number families (synthetic/numbers.py) but the printed one, written with MNIST
*training* digits (the evaluation writes them with test digits) and brought to the reader's input
exactly as served: decoded, cleaned and segmented into atoms (handler/number/), then line_input.
Touching and overlapping digits, which the segmentation reads worst, are the largest share; the
digit families' corruptions are written at several strengths (STRENGTH_SCALES). The last 5,000
training digits write the lines it is validated on (and train.calibrate_numbers' fit set).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from handler.number.line_reader import greedy_decode, line_input
from handler.number.reader import read_requests
from model.line_network import BLANK, LINE_WEIGHTS, STRIDE, LineCNN, LineConfig, save_line_checkpoint
from ops.stamp import stamp
from synthetic.numbers import CORRUPTION_STRENGTHS, number_family
from train.data import load_mnist

# family -> its share of the lines
MIX = {
    "touching": 4,
    "overlapping": 4,
    "gaps": 1,
    "sizes_baseline": 2,
    "paper_photo": 1,
    "canvas": 1,
    "scanned": 1,
    "gaussian_noise": 1,
    "salt_and_pepper": 1,
    "grey_background": 1,
    "outline": 1,
    "edge_bars": 1,
    "haze": 1,
    "crossing_lines": 1,
    "blots": 1,
    "speckle": 1,
    "motion_blur": 1,
    "jitter": 1,
}
# The families of the digit families' corruptions (CORRUPTION_STRENGTHS) are written at these
# multiples of their evaluation strength, at most 1, in turn by job (JOB_LINES): the reader meets
# each corruption weaker and stronger than the evaluation's, as the digit network meets them.
STRENGTH_SCALES = (0.5, 1.0, 1.5)
VALIDATION_DIGITS = 5000
JOB_LINES = 500  # lines a worker process writes in one job, of one family and one strength


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=120000, help="training lines, all families together")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes writing the lines")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=str(LINE_WEIGHTS))
    return p


def _lines(job: tuple) -> list[tuple[np.ndarray, str]]:
    """One job's lines as the reader's inputs (uint8, (28, w)) and their texts."""
    family, digits, labels, count, seed, strength = job
    torch.set_num_threads(1)
    samples = number_family(family, digits, labels, count, seed, strength)
    out = []
    for i in range(0, len(samples), 64):
        chunk = samples[i : i + 64]
        batch = read_requests([{"body": data} for data, _ in chunk])
        found = iter(batch.candidates)
        for (_, text), outcome in zip(chunk, batch.outcomes):
            if isinstance(outcome, slice):
                cand = next(found)
                x = line_input(cand.ink, cand.lattice)[0]
                out.append(((x * 255 + 0.5).astype(np.uint8), text))
    return out


def _job_strength(family: str, turn: int) -> float | None:
    """A corrupted family's strength for one job; None (the family's own) for the others.

    turn is the family's index plus the job's, so that the families do not all meet their weak
    scale in the same jobs."""
    if family not in CORRUPTION_STRENGTHS:
        return None
    scale = STRENGTH_SCALES[turn % len(STRENGTH_SCALES)]
    return min(1.0, scale * CORRUPTION_STRENGTHS[family])


def make_lines(digits, labels, total: int, seed: int, workers: int) -> list[tuple[np.ndarray, str]]:
    shares = sum(MIX.values())
    jobs = []
    for k, (family, share) in enumerate(MIX.items()):
        count = total * share // shares
        for job, part in enumerate(range(0, count, JOB_LINES)):
            strength = _job_strength(family, k + job)
            seed_of_job = seed * 100_000 + k * 1000 + job
            jobs.append((family, digits, labels, min(JOB_LINES, count - part), seed_of_job, strength))
    with ProcessPoolExecutor(workers) as pool:
        return [line for lines in pool.map(_lines, jobs) for line in lines]


def batches(lines: list, size: int, rng: np.random.Generator, shuffle: bool):
    """Lines of similar widths together (sorted, then batches shuffled): little padding."""
    order = sorted(range(len(lines)), key=lambda i: lines[i][0].shape[1])
    groups = [order[i : i + size] for i in range(0, len(order), size)]
    if shuffle:
        rng.shuffle(groups)
    for group in groups:
        widest = max(lines[i][0].shape[1] for i in group)
        x = np.zeros((len(group), 1, lines[group[0]][0].shape[0], widest), np.float32)
        for row, i in enumerate(group):
            x[row, 0, :, : lines[i][0].shape[1]] = lines[i][0] / 255
        texts = [lines[i][1] for i in group]
        widths = [lines[i][0].shape[1] // STRIDE for i in group]
        yield torch.from_numpy(x), texts, widths


def sequence_accuracy(model: LineCNN, lines: list) -> float:
    model.eval()
    right = 0
    with torch.inference_mode():
        for x, texts, widths in batches(lines, 64, np.random.default_rng(0), shuffle=False):
            p = model(x).exp().numpy()
            for row, text, w in zip(p, texts, widths):
                right += "".join(str(d) for d, *_ in greedy_decode(row[:w])) == text
    return right / len(lines)


def main(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    x, y = load_mnist(args.data_root, train=True)
    digits, labels = x.numpy(), y.numpy()
    cut = len(digits) - VALIDATION_DIGITS
    train = make_lines(digits[:cut], labels[:cut], args.lines, args.seed, args.workers)
    valid = make_lines(digits[cut:], labels[cut:], max(100, args.lines // 20), args.seed + 1, args.workers)
    print(f"{len(train)} training and {len(valid)} validation lines in {time.perf_counter() - start:.0f} s", flush=True)
    torch.set_num_threads(args.workers)
    model = LineCNN(LineConfig())
    steps = args.epochs * -(-len(train) // args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps)
    rng = np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        model.train()
        total, count = 0.0, 0
        for x, texts, widths in batches(train, args.batch_size, rng, shuffle=True):
            log_p = model(x).transpose(0, 1)  # (T, N, 11), as ctc_loss takes it
            targets = torch.tensor([int(c) for t in texts for c in t])
            loss = F.ctc_loss(
                log_p,
                targets,
                torch.tensor(widths),
                torch.tensor([len(t) for t in texts]),
                blank=BLANK,
                zero_infinity=True,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total, count = total + loss.item() * len(texts), count + len(texts)
        accuracy = sequence_accuracy(model, valid)
        print(
            f"epoch {epoch + 1}: loss {total / count:.4f}, validation numbers right {accuracy:.2%}, "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
    model.eval()
    save_line_checkpoint(
        model,
        args.out,
        stamp=stamp(),
        recipe=vars(args) | {"mix": MIX},
        validation_numbers_right=round(accuracy, 4),
        training_lines=len(train),
    )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
