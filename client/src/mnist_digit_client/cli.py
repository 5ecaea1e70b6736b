"""Command line for the digit service.

    mnist-digit predict digit.png photo.jpg        # one JSON line per file, as each is answered
    mnist-digit number meter.jpg postcode.png      # the number in each file, one JSON line each
    mnist-digit explain digit.png                  # the same, with the view read and its attributions
    mnist-digit health                             # {"status": "Healthy"}, exit 0 when healthy

The key is read from key_file.json (TorchServe writes it in the folder it was started from) and
re-read when the server refuses it; --no-token for a server with token authorization off.
Exit status: 0 when every file got a digit (a number), 1 when any did not, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed

from mnist_digit_client.calls import RetryPolicy
from mnist_digit_client.core import DEFAULT_MODEL, DEFAULT_URL, NUMBER_MODEL, as_result
from mnist_digit_client.errors import DigitServiceError
from mnist_digit_client.routes import ROUTES, Prediction
from mnist_digit_client.threaded import DigitClient


def header(text: str) -> tuple[str, str]:
    """'Name: value' -> (name, value)."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', not {text!r}")
    return name.strip(), value.strip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=DEFAULT_URL, help="inference address (default: %(default)s)")
    common.add_argument("--model", default=DEFAULT_MODEL, help="model name (default: %(default)s)")
    common.add_argument("--route", choices=list(ROUTES), default="torchserve", help="protocol (default: %(default)s)")
    keys = common.add_mutually_exclusive_group()
    keys.add_argument(
        "--token-file",
        default="key_file.json",
        help="TorchServe key file with the inference key (default: %(default)s; '' for none)",
    )
    keys.add_argument("--no-token", action="store_true", help="send no key: the server has token authorization off")
    common.add_argument(
        "--header", type=header, action="append", default=[], metavar="'NAME: VALUE'", help="sent on every request"
    )
    common.add_argument("--timeout", type=float, default=RetryPolicy.timeout, help="seconds per attempt")
    common.add_argument("--retries", type=int, default=RetryPolicy.retries, help="retries after a 5xx answer")
    common.add_argument(
        "--deadline", type=float, default=RetryPolicy.deadline, help="seconds for all attempts of one file"
    )
    parser = argparse.ArgumentParser(
        prog="mnist-digit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", parents=[common], help="the digit in each image file")
    predict.add_argument("files", nargs="+", metavar="FILE")
    predict.add_argument("--concurrency", type=int, default=8, help="files in flight at once")
    number = commands.add_parser("number", parents=[common], help="the number (1 to 12 digits) in each image file")
    number.add_argument("files", nargs="+", metavar="FILE")
    number.add_argument("--number-model", default=NUMBER_MODEL, help="the number model's name (default: %(default)s)")
    number.add_argument("--concurrency", type=int, default=8, help="files in flight at once")
    explain = commands.add_parser(
        "explain", parents=[common], help="the digit in each image file, the view read and its attributions"
    )
    explain.add_argument("files", nargs="+", metavar="FILE")
    commands.add_parser("health", parents=[common], help="check that the server answers /ping")
    return parser.parse_args(argv)


def print_line(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


def predict(client: DigitClient, files: list[str], concurrency: int) -> int:
    failed = 0
    for i, result in client.as_completed(files, concurrency=max(1, concurrency)):
        if isinstance(result, Prediction):
            print_line({"file": files[i], "digit": result.digit, "confidence": result.confidence})
        else:
            failed += 1
            print_line({"file": files[i], **result.body()})
    return 1 if failed else 0


def numbers(client: DigitClient, files: list[str], model: str, concurrency: int) -> int:
    """One JSON line per file: its number, confidence and digits (with boxes), or its error."""
    failed = 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {pool.submit(client.read_number, path, model): path for path in files}
        for future in as_completed(futures):
            try:
                reading = future.result()
            except (DigitServiceError, OSError) as error:
                failed += 1
                print_line({"file": futures[future], **as_result(error).body()})
                continue
            digits = [{"digit": d.digit, "confidence": d.confidence, "box": list(d.box)} for d in reading.digits]
            print_line(
                {"file": futures[future], "number": reading.number, "confidence": reading.confidence, "digits": digits}
            )
    return 1 if failed else 0


def explain(client: DigitClient, files: list[str]) -> int:
    """One file at a time, in order: an explanation costs the service several predictions."""
    failed = 0
    for file in files:
        try:
            e = client.explain(file)
        except (DigitServiceError, OSError) as error:
            failed += 1
            print_line({"file": file, **as_result(error).body()})
            continue
        print_line(
            {"file": file, "digit": e.digit, "confidence": e.confidence, "view": e.view, "attributions": e.attributions}
        )
    return 1 if failed else 0


def health(client: DigitClient) -> int:
    try:
        answer = client.health()
    except DigitServiceError as error:
        print_line(error.body())
        return 1
    print_line(answer)
    return 0 if answer.get("status") == "Healthy" else 1


def open_client(args: argparse.Namespace) -> DigitClient | None:
    """The client the options ask for; None (after saying why) when the key file cannot be read."""
    token_file = None if args.no_token else (args.token_file or None)
    try:
        return DigitClient(
            args.url,
            token_file=token_file,
            timeout=args.timeout,
            retries=args.retries,
            deadline=args.deadline,
            model=args.model,
            route=args.route,
            headers=dict(args.header),
        )
    except (OSError, ValueError, KeyError) as error:
        print(
            f"error: cannot read the inference key from {token_file!r} ({error}); run from the folder "
            "TorchServe was started in, pass --token-file, or --no-token for a server without keys",
            file=sys.stderr,
        )
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    client = open_client(args)
    if client is None:
        return 2
    with client:
        if args.command == "health":
            return health(client)
        if args.command == "number":
            return numbers(client, args.files, args.number_model, args.concurrency)
        if args.command == "explain":
            return explain(client, args.files)
        return predict(client, args.files, args.concurrency)
