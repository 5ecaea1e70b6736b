"""Command line for the digit service.

    python -m client predict digit.png photo.jpg        # one JSON line per file, as each is answered
    python -m client health                             # {"status": "Healthy"}, exit 0 when healthy

The key is read from key_file.json (TorchServe writes it in the folder it was started from) and
re-read when the server refuses it. Exit status: 0 when every file got a digit, 1 when any did
not, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys

from client.core import DEFAULT_URL, DigitClient, Prediction, RetryPolicy
from client.errors import DigitServiceError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=DEFAULT_URL, help="inference address (default: %(default)s)")
    common.add_argument(
        "--token-file",
        default="key_file.json",
        help="TorchServe key file with the inference key (default: %(default)s)",
    )
    common.add_argument("--timeout", type=float, default=RetryPolicy.timeout, help="seconds per attempt")
    common.add_argument("--retries", type=int, default=RetryPolicy.retries, help="attempts after the first")
    common.add_argument(
        "--deadline", type=float, default=RetryPolicy.deadline, help="seconds for all attempts of one file"
    )
    parser = argparse.ArgumentParser(
        prog="python -m client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", parents=[common], help="the digit in each image file")
    predict.add_argument("files", nargs="+", metavar="FILE")
    predict.add_argument("--concurrency", type=int, default=8, help="files in flight at once")
    commands.add_parser("health", parents=[common], help="check that the server answers /ping")
    return parser.parse_args(argv)


def print_line(record: dict) -> None:
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


def health(client: DigitClient) -> int:
    try:
        answer = client.health()
    except DigitServiceError as error:
        print_line(error.body())
        return 1
    print_line(answer)
    return 0 if answer.get("status") == "Healthy" else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        client = DigitClient(
            args.url,
            token_file=args.token_file or None,
            timeout=args.timeout,
            retries=args.retries,
            deadline=args.deadline,
        )
    except (OSError, ValueError, KeyError) as error:
        print(
            f"error: cannot read the inference key from {args.token_file!r} ({error}); run from the folder "
            "TorchServe was started in, or pass --token-file",
            file=sys.stderr,
        )
        return 2
    with client:
        if args.command == "health":
            return health(client)
        return predict(client, args.files, args.concurrency)


if __name__ == "__main__":
    sys.exit(main())
