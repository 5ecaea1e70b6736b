"""Turn what clients send into what the network was trained on: the one preprocessing implementation.

Used by the TorchServe handler, the evaluation and the tests. The path of one image, a module per stage:

    request payload --envelopes--> image bytes --decode--> (H, W) float in [0, 1]
    --mnistify--> (28, 28) readings: light digit on black, longer side 20 px, centre of mass centred
    --batch--> (K, 1, 28, 28) network input; per request its images or its error; per image the
               reading the network is surest of, looked at again turned either way when unsure

`kernels` holds the torch kernels mnistify runs on (N, H, W) stacks, on the worker's device.
"""
from handler.errors import InputError
from handler.preprocess.batch import (RequestBatch, decode_batch, preprocess_bytes, read_digits, readings_bytes,
                                      request_images, second_look, surest_readings, to_batch)
from handler.preprocess.decode import MAX_PIXELS, decode_gray, decode_image, to_grayscale
from handler.preprocess.envelopes import request_grays
from handler.preprocess.mnistify import denoise, is_noisy, mnist_like, mnist_like_many, noise_level

__all__ = ["InputError", "MAX_PIXELS", "RequestBatch", "decode_batch", "read_digits",
           "readings_bytes", "second_look", "surest_readings", "decode_gray", "decode_image", "denoise",
           "is_noisy", "mnist_like", "mnist_like_many", "noise_level", "preprocess_bytes", "request_grays",
           "request_images", "to_batch", "to_grayscale"]
