"""`make explanations`: are the service's explanations faithful, and what do they cost? Writes
reports/explanations.{json,md} (stamped, ops/stamp.py).

    python -m benchmarks.explanations                      # 2,000 MNIST test digits, n_steps 2 to 16
    python -m benchmarks.explanations --digits 500 --steps 6 --no-torchserve

Everything runs in this process through the handler's own code (DigitHandler.handle on batches of
16 requests marked as TorchServe marks an explanation request), for each n_steps of integrated
gradients (handler/explanations.py; the handler serves N_STEPS):

1. Faithfulness: MNIST test digits uploaded as PNGs are explained; in each answer's view, the k
   pixels with the highest attribution are blanked (k: a tenth of the view's ink pixels, ink:
   view > INK), and so are k ink pixels drawn at random; each blanked view is read again as the
   service reads a view (inference.digit_probabilities). An explanation that points at what made
   the answer changes it far more often than chance does: goal FAITHFULNESS_GOAL times as often.
2. Cost: process CPU time per image of a batch of 16 MNIST PNG uploads (the committed sample),
   explained and predicted back to back: goal at most COST_GOAL times a prediction's.
3. With --torchserve (the default): the workers' CPU time per request of a real TorchServe,
   predictions and explanations of the same PNGs at concurrency 16.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_report import markdown_table, write_report
from handler.explanations import N_STEPS
from handler.inference import digit_probabilities
from harness.inprocess import load_handler
from harness.samples import sample_digits
from ops.paths import ROOT
from ops.stamp import stamp
from synthetic.families import encode_image
from train.data import load_mnist

INK = 0.2  # a view's pixels above this are ink
K_FRACTION = 0.1  # pixels blanked: this share of the view's ink pixels
FAITHFULNESS_GOAL = 3.0  # top-attributed blanking changes answers at least this many times as often as random
COST_GOAL = 10.0  # an explanation's CPU at most this many times a prediction's
BLOCK_SECONDS = 0.5  # CPU seconds of one kind of request before the other's turn
BATCH = 16  # requests per batch, as TorchServe hands them to a worker (model-config.yaml's batchSize)
EXPLAIN, PREDICT = {"explain": "True"}, {"explain": "False"}  # what TorchServe's REST frontend adds
TORCHSERVE_COLUMNS = ("worker_cpu_ms_per_request", "requests_per_s", "images_per_batch", "ok")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--digits", type=int, default=2000, help="MNIST test digits explained (the first N)")
    p.add_argument("--steps", type=int, nargs="+", default=[2, 4, 6, 8, 12, 16], help="n_steps to measure")
    p.add_argument("--seconds", type=float, default=3.0, help="CPU seconds of timed batches per kind and n_steps")
    p.add_argument("--torchserve", action=argparse.BooleanOptionalAction, default=True, help="also a real server")
    p.add_argument("--requests", type=int, default=320, help="requests per route through TorchServe")
    p.add_argument("--data-root", default=None, help="folder with MNIST/raw (default: $MNIST_ROOT or ./data)")
    p.add_argument("--note", default="", help="conditions of the run, written into the report")
    p.add_argument("--out", default=str(ROOT / "reports"), help="report folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the random blanking")
    return p


def handled(handler, context, bodies: list[bytes], marker: dict[str, str]) -> list[dict]:
    """The parsed answers of one batch of raw-body requests, each carrying `marker` as its headers."""
    context.request_headers.update({i: marker for i in range(len(bodies))})
    return [json.loads(a) for a in handler.handle([{"body": b} for b in bodies], context)]


def blanked(view: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    out = view.copy()
    out.flat[pixels] = 0.0
    return out


def blanking_pairs(answers: list[dict], rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per answer its view with its k most attributed pixels blanked, and with k random ink pixels."""
    top, random = [], []
    for answer in answers:
        view, attributions = np.asarray(answer["view"], np.float32), np.asarray(answer["attributions"])
        ink = np.flatnonzero(view.ravel() > INK)
        k = max(1, round(K_FRACTION * len(ink)))
        top.append(blanked(view, np.argsort(-attributions.ravel(), kind="stable")[:k]))
        random.append(blanked(view, rng.choice(ink, k, replace=False)))
    return top, random


def reread(handler, views: list[np.ndarray]) -> np.ndarray:
    """The digits the service answers for these views, each read as its image's only candidate view."""
    candidates = [[torch.from_numpy(v).to(handler.device)] for v in views]
    return digit_probabilities(handler.model, candidates, handler.device, handler.settings.tta_below).argmax(1).numpy()


def completeness_gaps(handler, answers: list[dict]) -> np.ndarray:
    """|sum of attributions - (logit(view) - logit(blank))| over the latter, for the answered digit:
    how far the path integral's Gauss-Legendre estimate is off."""
    views = torch.tensor(np.asarray([a["view"] for a in answers], np.float32))[:, None].to(handler.device)
    digits = torch.tensor([a["digit"] for a in answers])
    with torch.inference_mode():
        logits = handler.model(torch.cat([views, torch.zeros_like(views[:1])])).cpu()
    rise = logits[:-1].gather(1, digits[:, None])[:, 0] - logits[-1, digits]
    sums = torch.tensor([float(np.sum(a["attributions"])) for a in answers])
    return ((sums - rise).abs() / rise.abs()).numpy()


def ink_share(answers: list[dict]) -> np.ndarray:
    """Per answer: the share of its absolute attribution that lies on ink pixels."""
    shares = []
    for a in answers:
        view, attributions = np.asarray(a["view"]), np.abs(np.asarray(a["attributions"]))
        shares.append(attributions[view > INK].sum() / max(attributions.sum(), 1e-12))
    return np.asarray(shares)


def faithfulness(handler, context, uploads: list[bytes], labels: np.ndarray, seed: int) -> dict:
    """Step 1 for the handler's current n_steps."""
    rng = np.random.default_rng(seed)
    batches = [uploads[i : i + BATCH] for i in range(0, len(uploads), BATCH)]
    answers = [a for batch in batches for a in handled(handler, context, batch, EXPLAIN)]
    digits = np.asarray([a["digit"] for a in answers])
    top, random = blanking_pairs(answers, rng)
    top_rate = float((reread(handler, top) != digits).mean())
    random_rate = float((reread(handler, random) != digits).mean())
    gaps = completeness_gaps(handler, answers)
    views = [np.asarray(a["view"], np.float32) for a in answers]
    return {
        "digits": len(answers),
        "accuracy": round(float((digits == labels).mean()), 4),
        "view_reread_agrees": round(float((reread(handler, views) == digits).mean()), 4),
        "top_changed": round(top_rate, 4),
        "random_changed": round(random_rate, 4),
        "ratio": round(top_rate / random_rate, 2) if random_rate else None,
        "completeness_gap_median": round(float(np.median(gaps)), 4),
        "completeness_gap_p95": round(float(np.percentile(gaps, 95)), 4),
        "ink_share_median": round(float(np.median(ink_share(answers))), 4),
    }


def cost(handler, context, bodies: list[bytes], seconds: float) -> dict:
    """Step 2: CPU ms per image of the same batch of 16, predicted and explained: each kind for
    `seconds` of CPU, in blocks of BLOCK_SECONDS taking turns, so that both meet the same machine
    (a shared one drifts) and each runs as a worker busy with it alone would."""
    requests = [{"body": b} for b in bodies[:BATCH]]
    kinds = {"prediction": PREDICT, "explanation": EXPLAIN}
    spent, images = dict.fromkeys(kinds, 0.0), dict.fromkeys(kinds, 0)
    while min(spent.values()) < seconds:
        for kind, marker in kinds.items():
            context.request_headers.update({i: marker for i in range(len(requests))})
            handler.handle(requests, context)  # the first batch of a block: warming, not timed
            start = time.process_time()
            while time.process_time() - start < BLOCK_SECONDS:
                handler.handle(requests, context)
                images[kind] += len(requests)
            spent[kind] += time.process_time() - start
    out = {f"{kind}_cpu_ms": round(spent[kind] / images[kind] * 1000, 3) for kind in kinds}
    out["ratio"] = round(out["explanation_cpu_ms"] / out["prediction_cpu_ms"], 2)
    return out


def batch_totals(server) -> tuple[float, float]:
    """(images, batches) the workers have read so far: the DigitBatchSize histogram's sum and count,
    once the workers' last flush is out (handler/metric_buffer.py)."""
    import requests

    time.sleep(1.5)
    text = requests.get(f"{server.metrics}/metrics", timeout=10).text
    totals = {}
    for name in ("DigitBatchSize_sum", "DigitBatchSize_count"):
        totals[name] = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))
    return totals["DigitBatchSize_sum"], totals["DigitBatchSize_count"]


def through_torchserve(bodies: list[bytes], requests_per_route: int) -> dict:
    """Step 3: the workers' CPU ms per request (psutil) and images per batch, each route at
    concurrency 16."""
    import tempfile

    import psutil
    import requests

    from harness.local_server import LocalTorchServe
    from ops.build_archive import build_archive

    store = Path(tempfile.mkdtemp(prefix="explain-store-"))
    build_archive(store)
    server = LocalTorchServe(store).start()
    out = {}
    try:
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))
        headers = {**server.headers(), "Content-Type": "image/png"}
        for name, route in (("prediction", "/predictions/mnist"), ("explanation", "/explanations/mnist")):
            workers = [psutil.Process(pid) for pid in server.worker_pids()]

            def post(body: bytes, route=route) -> int:
                return session.post(server.inference + route, data=body, headers=headers, timeout=60).status_code

            list(ThreadPoolExecutor(16).map(post, bodies[:32]))  # warm: captum's import, first batches
            images, batches = batch_totals(server)
            before = sum(sum(w.cpu_times()[:2]) for w in workers)
            start = time.perf_counter()
            with ThreadPoolExecutor(16) as pool:
                statuses = list(pool.map(post, itertools.islice(itertools.cycle(bodies), requests_per_route)))
            wall = time.perf_counter() - start
            spent = sum(sum(w.cpu_times()[:2]) for w in workers) - before
            images_after, batches_after = batch_totals(server)
            out[name] = {
                "worker_cpu_ms_per_request": round(spent / requests_per_route * 1000, 3),
                "requests_per_s": round(requests_per_route / wall, 1),
                "images_per_batch": round((images_after - images) / max(1, batches_after - batches), 2),
                "ok": statuses.count(200),
            }
        spent = [out[kind]["worker_cpu_ms_per_request"] for kind in ("explanation", "prediction")]
        out["ratio"] = round(spent[0] / spent[1], 2)
    finally:
        server.stop()
    return out


def markdown(report: dict) -> str:
    rows = []
    for r in report["steps"]:
        f, c = r["faithfulness"], r["cost"]
        served = " (served)" if r["n_steps"] == report["served_steps"] else ""
        rows.append(
            [
                f"{r['n_steps']}{served}",
                f"{f['top_changed']:.2%}",
                f"{f['random_changed']:.2%}",
                f"{f['ratio']}" if f["ratio"] is not None else "no random change",
                f"{f['completeness_gap_median']:.1%} / {f['completeness_gap_p95']:.1%}",
                f"{c['prediction_cpu_ms']} / {c['explanation_cpu_ms']}",
                f"{c['ratio']}",
            ]
        )
    served = next(r for r in report["steps"] if r["n_steps"] == report["served_steps"])
    lines = [
        "# Explanations: faithfulness and cost",
        "",
        f"Integrated gradients (`handler/explanations.py`) of {served['faithfulness']['digits']:,} MNIST test digits "
        f"uploaded as PNGs, explained in process through `DigitHandler.handle` in batches of {BATCH}; the service "
        f"runs n_steps = {report['served_steps']}. Answers correct: {served['faithfulness']['accuracy']:.2%}.",
        "",
        "## Goals (the served n_steps)",
        "",
        *markdown_table(
            ["goal", "measured", "met"],
            [
                [
                    f"blanking the top-attributed pixels changes the answer >= {FAITHFULNESS_GOAL:g}x as often "
                    "as blanking random ink pixels",
                    f"{served['faithfulness']['ratio']}x",
                    "yes" if report["goals"]["faithful"] else "**no**",
                ],
                [
                    f"an explanation's CPU <= {COST_GOAL:g}x a prediction's (batch of {BATCH} PNGs, in process)",
                    f"{served['cost']['ratio']}x",
                    "yes" if report["goals"]["cost"] else "**no**",
                ],
            ],
        ),
        "",
        "## Per n_steps",
        "",
        *markdown_table(
            [
                "n_steps",
                "answers changed: top-k blanked",
                "random k ink pixels blanked",
                "ratio",
                "completeness gap median / p95",
                "CPU ms per image: prediction / explanation",
                "CPU ratio",
            ],
            rows,
        ),
        "",
        f"- k: {K_FRACTION:.0%} of the view's ink pixels (view > {INK}), at least 1; blanked: set to 0, the "
        "baseline. Each blanked view is read again as the service reads a view (test-time augmentation "
        "included) and counts when its digit differs from the one answered. The explanation's own view "
        f"read again gives the answer for {served['faithfulness']['view_reread_agrees']:.2%} of the digits.",
        "- Completeness gap: |sum of attributions - (logit(view) - logit(blank))| / |logit(view) - logit(blank)| "
        "for the answered digit: the error of the path integral's estimate, which falls with n_steps.",
        f"- Share of the absolute attribution on ink pixels (served n_steps), median: "
        f"{served['faithfulness']['ink_share_median']:.1%}.",
        f"- CPU: process CPU time (`time.process_time`, {report['torch_threads']} PyTorch thread) of "
        f"`DigitHandler.handle` on one batch of the first {BATCH} committed MNIST test digits as PNGs, "
        f"{report['seconds']:g} s of CPU of predictions and as much of explanations per n_steps, in turns of "
        f"{BLOCK_SECONDS:g} s.",
    ]
    if report.get("torchserve"):
        ts = report["torchserve"]
        lines += [
            "",
            "## Through TorchServe",
            "",
            f"A real TorchServe (this repository's archive and config) answering {report['requests']} requests per "
            "route at concurrency 16, the 100 committed MNIST test digits as PNGs; the workers' CPU time (psutil) "
            f"per request, served n_steps:",
            "",
            *markdown_table(
                ["route", "worker CPU ms per request", "requests/s", "images per batch", "answered 200"],
                [
                    [f"`{route}`", *(str(ts[kind][field]) for field in TORCHSERVE_COLUMNS)]
                    for kind, route in (("prediction", "/predictions/mnist"), ("explanation", "/explanations/mnist"))
                ],
            ),
            "",
            f"Ratio: {ts['ratio']}x; the workers' CPU includes their share of TorchServe's protocol and the "
            f"metrics. Batches held {BATCH} images in process, here the images per batch above.",
        ]
    load = report["load_average"]
    lines += [
        "",
        f"Load average (1 min) at the start and the end: {load[0]:.2f} and {load[1]:.2f} on {os.cpu_count()} cores."
        + (f" {report['note']}" if report["note"] else ""),
        "",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> dict:
    handler, context = load_handler(metrics_flush_seconds=0)
    images, labels = load_mnist(args.data_root, train=False, limit=args.digits)
    uploads = [encode_image(d) for d in images.numpy()]
    sample = [encode_image(d) for d in sample_digits()[0]]
    report = {
        "stamp": stamp(),
        "served_steps": N_STEPS,
        "torch_threads": handler.settings.torch_threads,
        "seconds": args.seconds,
        "requests": args.requests,
        "note": args.note,
        "load_average": [os.getloadavg()[0]],
        "steps": [],
    }
    for n_steps in sorted(set(args.steps) | {N_STEPS}):
        handler.explainer.n_steps = n_steps
        row = {
            "n_steps": n_steps,
            "faithfulness": faithfulness(handler, context, uploads, labels.numpy(), args.seed),
            "cost": cost(handler, context, sample, args.seconds),
        }
        print(json.dumps(row), flush=True)
        report["steps"].append(row)
    handler.explainer.n_steps = N_STEPS
    served = next(r for r in report["steps"] if r["n_steps"] == N_STEPS)
    top, random = served["faithfulness"]["top_changed"], served["faithfulness"]["random_changed"]
    report["goals"] = {
        "faithful": top > 0 and top >= FAITHFULNESS_GOAL * random,
        "cost": served["cost"]["ratio"] <= COST_GOAL,
    }
    if args.torchserve:
        report["torchserve"] = through_torchserve(sample, args.requests)
    report["load_average"].append(os.getloadavg()[0])
    write_report(Path(args.out) / "explanations", report, markdown(report))
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
