"""Whether a HEIF file holds all of its items' data: the check behind a truncated HEIC's 400.

libheif reads a HEIF's boxes when it opens one and its items' data only when it decodes them, and
decodes a grid image whose last tiles are missing without an error (they come out a flat grey); a
thumbnail early in a file cut short decodes too. So decode.py refuses a HEIF unless every extent
that its item locations ("iloc", ISO/IEC 14496-12 8.11.3) give lies inside the file."""

from __future__ import annotations

import struct


def items_inside(data: bytes) -> bool:
    """Every item extent stored in the file itself lies within `data`; False also for boxes that
    cannot be read (a file libheif opened has them)."""
    meta = _child(data, 0, len(data), b"meta")
    iloc = meta and _child(data, meta[0] + 4, meta[1], b"iloc")  # meta is a full box: skip version, flags
    if not iloc:
        return False
    try:
        return all(end <= len(data) for end in _extent_ends(data[iloc[0] : iloc[1]]))
    except (IndexError, struct.error):  # the box ends before the fields it declares
        return False


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    """(payload start, payload end) of the first box of this type in data[start:end]."""
    while start + 8 <= end:
        size, found = struct.unpack_from(">I4s", data, start)
        header = 8
        if size == 1 and start + 16 <= end:  # a 64-bit size follows the type
            size, header = struct.unpack_from(">Q", data, start + 8)[0], 16
        elif size == 0:  # to the end
            size = end - start
        if size < header or start + size > end:
            return None
        if found == kind:
            return start + header, start + size
        start += size
    return None


def _extent_ends(iloc: bytes) -> list[int]:
    """The end offset of each extent in the file (construction method 0) of an iloc payload."""
    version, at = iloc[0], 4
    offset_size, length_size = iloc[at] >> 4, iloc[at] & 15
    base_offset_size, index_size = iloc[at + 1] >> 4, (iloc[at + 1] & 15) if version in (1, 2) else 0
    at += 2
    id_size = 2 if version < 2 else 4

    def number(size: int) -> int:
        nonlocal at
        if at + size > len(iloc):
            raise IndexError("iloc ends early")
        value = int.from_bytes(iloc[at : at + size], "big")
        at += size
        return value

    ends = []
    for _ in range(number(id_size)):  # items
        number(id_size)  # item ID
        method = number(2) & 15 if version in (1, 2) else 0
        external = number(2) != 0  # data_reference_index: another file
        base = number(base_offset_size)
        for _ in range(number(2)):  # extents
            number(index_size)
            offset, length = number(offset_size), number(length_size)
            if method == 0:
                ends.append(2**63 if external else base + offset + length)  # length 0: to the end
    return ends
