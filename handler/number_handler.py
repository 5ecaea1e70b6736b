"""TorchServe handler of the `number` model: a batch of images of numbers -> per image its digits.

The digit model's handler (handler/mnist_handler.py, DigitHandler) with its own three steps: its
settings, network, metrics, request decoding, typed errors, answers per protocol and logs are the
digit model's; preprocess segments each line into candidate digits, inference reads every
candidate of the batch in one forward pass, finds each line's best path and refuses the lines
whose digits the open-set head finds none of them a digit, postprocess answers
`{"number", "confidence", "digits": [{"digit", "confidence", "box"}, ...]}` (handler/number/).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from handler.answers import model_metadata
from handler.calibration import CALIBRATION_FILE
from handler.errors import RequestError
from handler.mnist_handler import DigitHandler
from handler.number.answers import NUMBER_METADATA, number_answer
from handler.number.confidence import NUMBER_CALIBRATION_FILE, load_number_calibration
from handler.number.reader import NumberBatch, Reading, read_lines, read_requests
from handler.served_model import served_line_network
from model.line_network import LINE_READER_FILE, load_line_checkpoint
from model.open_set import OPEN_SET_FILE


class NumberHandler(DigitHandler):
    """What TorchServe calls for the `number` model (DigitHandler explains the entry points)."""

    served_files = (CALIBRATION_FILE, OPEN_SET_FILE, NUMBER_CALIBRATION_FILE, LINE_READER_FILE)

    def initialize(self, context) -> None:
        super().initialize(context)
        model_dir = Path(context.system_properties["model_dir"])
        weights = model_dir / context.manifest["model"]["serializedFile"]
        # Raises CalibrationError when missing or fitted for other weights: the worker does not start.
        self.number_calibration = load_number_calibration(model_dir / NUMBER_CALIBRATION_FILE, weights)
        # Lines whose digits touch are read whole (handler/number/line_reader.py).
        self.line_model = served_line_network(load_line_checkpoint(model_dir / LINE_READER_FILE)).to(self.device)

    def preprocess(self, data: list[dict], headers: list[dict[str, str]] | None = None) -> NumberBatch:
        """`headers`: each request's, lowercased."""
        start = time.perf_counter()
        batch = read_requests(data, headers)
        self._observe("PreprocessTime", (time.perf_counter() - start) * 1000)
        return batch

    def inference(self, batch: NumberBatch) -> list[Reading | RequestError] | None:
        """Per image of the batch its Reading, or why it has none; None if every request failed."""
        if len(batch.views) == 0:
            return None
        self._observe("DigitBatchSize", sum(map(len, batch.views)))  # candidates read in the one pass
        return read_lines(
            self.model,
            batch,
            self.device,
            self.calibration,
            self.number_calibration,
            self.line_model,
            self.open_set,
        )

    def postprocess(
        self,
        batch: NumberBatch,
        readings: list[Reading | RequestError] | None,
        headers: list[dict[str, str]] | None = None,
    ) -> list[str]:
        readings = readings or []
        read = [r for r in readings if isinstance(r, Reading)]
        for digit, count in Counter(d for r in read for d in r.digits).items():
            self._add("DigitPredictions", count, str(digit))
        unsure = sum(r.confidence < self.settings.low_confidence for r in read)
        if unsure:
            self._add("LowConfidencePredictions", unsure)
        for i, span in enumerate(batch.outcomes):  # a line read as too many digits fails its request
            if isinstance(span, slice):
                batch.outcomes[i] = next((r for r in readings[span] if isinstance(r, RequestError)), span)
        return self._answers(
            batch, headers, lambda span, envelope: number_answer(envelope, readings[span], self.model_id)
        )

    def metadata(self) -> dict:
        return model_metadata(self.model_id, NUMBER_METADATA)
