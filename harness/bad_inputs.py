"""Bad inputs the service must refuse with a 4xx: shared by the tests, the fuzzer and `make soak`."""
from __future__ import annotations

import struct
import zlib


def png_header(width: int, height: int) -> bytes:
    """A valid PNG header declaring a size, with no pixels behind it (a decompression bomb's shape)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">II", width, height) + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


INVALID = [  # (body, expected status)
    (b"", 400),
    (b"this is plain text, not an image", 415),
    (b"data:image/png;base64,@@@", 400),
    (png_header(50000, 50000), 413),
]
