"""Turn what clients send into what the network was trained on: the one preprocessing implementation.

Used by the TorchServe handler, the evaluation and the tests. The path of one image, a module per stage:

    request payload --envelopes--> image bytes --decode--> (H, W) float in [0, 1]
    --mnistify--> (28, 28) candidate views: light digit on black, longer side 20 px, centre of
               mass centred (margins.py: the band a digit is written on; background.py: background
               and noise; framing.py: crop and centre)
    --batch--> per request its images' candidate views, or its error

`kernels` holds the torch kernels mnistify runs on (N, H, W) stacks, on the worker's device.
handler/inference.py turns the candidate views into probabilities.
"""

from handler.errors import InputError
from handler.preprocess.batch import RequestBatch, decode_batch
from handler.preprocess.decode import MAX_PIXELS, decode_gray, decode_image, to_grayscale
from handler.preprocess.envelopes import request_grays
from handler.preprocess.mnistify import candidate_views, mnist_like

__all__ = [
    "InputError",
    "MAX_PIXELS",
    "RequestBatch",
    "candidate_views",
    "decode_batch",
    "decode_gray",
    "decode_image",
    "mnist_like",
    "request_grays",
    "to_grayscale",
]
