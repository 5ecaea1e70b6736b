"""A handler that does nothing: TorchServe's own ceiling for `make bench` (one small answer per request)."""


def handle(data, context):
    if data is None:  # the load-time call
        return None
    return ['{"digit": 0}'] * len(data)
