"""Image width and height from the file header, without decoding any pixel.

JPEG (with its EXIF orientation), PNG, GIF, BMP, WebP and TIFF are read here in pure Python by
reading a few hundred bytes (JPEG: up to the first frame header). Any other format falls back to
the ``imagesize`` package and then to Pillow (which also reads headers only), when installed.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Optional, Tuple

from .._fileio import open_regular

__all__ = ["image_size", "ImageSizeError"]


class ImageSizeError(ValueError):
    """The file is not an image whose size can be read from its header."""


# JPEG start-of-frame markers (SOF0..SOF15 without DHT C4, JPG C8 and DAC CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# EXIF orientations 5..8 rotate by 90 degrees: the displayed image has width and height swapped
# (Ultralytics and Pillow's exif_transpose both apply them before labels are normalized).
_SWAPPING_ORIENTATIONS = frozenset((5, 6, 7, 8))
#: How far into a JPEG the frame header is looked for (metadata before it rarely passes 1 MiB),
#: and how many segments may come before it.
MAX_JPEG_SCAN = 32 << 20
MAX_JPEG_SEGMENTS = 10_000
_CHUNK = 1 << 16


def image_size(path: str) -> Tuple[int, int]:
    """``(width, height)`` of the image at ``path`` as it is displayed (EXIF orientation applied).

    Raises
    ------
    ImageSizeError
        When the header cannot be read or the format is unknown (and neither ``imagesize`` nor
        Pillow, if installed, can read it).
    OSError
        When the file cannot be opened.
    """
    with open_regular(path) as f:
        head = f.read(32)
        size: Optional[Tuple[int, int]]
        try:
            size = _from_header(f, head)
        except (struct.error, IndexError) as exc:
            raise ImageSizeError(f"{path}: truncated or corrupt image header ({exc})") from None
        except ImageSizeError as exc:
            raise ImageSizeError(f"{path}: {exc}") from None
    if size is None:
        size = _fallback(path)
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageSizeError(f"{path}: the image header gives a size of {w}x{h}")
    return int(w), int(h)


def _from_header(f: BinaryIO, head: bytes) -> Optional[Tuple[int, int]]:
    if head.startswith(b"\xff\xd8"):
        return _jpeg(f)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if head[12:16] != b"IHDR":
            raise ImageSizeError("PNG without an IHDR chunk first")
        return struct.unpack(">II", head[16:24])
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", head[6:10])
    if head.startswith(b"BM"):
        (dib_size,) = struct.unpack("<I", head[14:18])
        if dib_size == 12:  # OS/2 BITMAPCOREHEADER
            return struct.unpack("<HH", head[18:22])
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)  # a negative height means top-down rows
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _webp(head + f.read(8))
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(f)
    return None


def _next_marker(f: BinaryIO) -> int:
    """The code of the next JPEG marker: skips stray bytes and fill bytes (0xFF) in chunks, up to
    :data:`MAX_JPEG_SCAN` bytes into the file; leaves the file just after the code."""
    while True:
        pos = f.tell()
        if pos >= MAX_JPEG_SCAN:
            raise ImageSizeError(f"no JPEG frame header in the first {MAX_JPEG_SCAN >> 20} MiB")
        chunk = f.read(_CHUNK)
        if not chunk:
            raise ImageSizeError("JPEG ended before its frame header")
        i = chunk.find(b"\xff")
        if i < 0:
            continue  # stray data between segments: resynchronise on the next marker
        j = len(chunk) - len(chunk[i:].lstrip(b"\xff"))  # past the fill bytes
        if j < len(chunk):
            f.seek(pos + j + 1)
            return chunk[j]
        if len(chunk) < _CHUNK:  # fill bytes up to the end of the file
            raise ImageSizeError("JPEG ended before its frame header")
        f.seek(pos + len(chunk) - 1)  # a run of 0xFF to the end of the chunk: go on from its last byte


def _jpeg(f: BinaryIO) -> Tuple[int, int]:
    f.seek(2)
    orientation = 1
    for _ in range(MAX_JPEG_SEGMENTS):
        code = _next_marker(f)
        if code == 0x01 or 0xD0 <= code <= 0xD8:  # markers without a length
            continue
        if code == 0xD9:
            raise ImageSizeError("JPEG ended before its frame header")
        (length,) = struct.unpack(">H", f.read(2))
        if length < 2:
            raise ImageSizeError(f"JPEG segment with an invalid length {length}")
        if code in _SOF:
            _precision, h, w = struct.unpack(">BHH", f.read(5))
            if orientation in _SWAPPING_ORIENTATIONS:
                w, h = h, w
            return w, h
        if code == 0xE1 and orientation == 1:
            payload = f.read(length - 2)
            if payload.startswith(b"Exif\x00\x00"):
                orientation = _tiff_orientation(payload[6:])
        else:
            f.seek(length - 2, 1)
    raise ImageSizeError(f"no JPEG frame header in the first {MAX_JPEG_SEGMENTS:,} segments")


def _tiff_orientation(tiff: bytes) -> int:
    """The EXIF orientation tag (274) of IFD0 in a TIFF structure held in memory, 1 if absent."""
    try:
        endian = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (offset,) = struct.unpack(endian + "I", tiff[4:8])
        (count,) = struct.unpack(endian + "H", tiff[offset : offset + 2])
        for i in range(count):
            entry = tiff[offset + 2 + 12 * i : offset + 14 + 12 * i]
            tag, typ = struct.unpack(endian + "HH", entry[:4])
            if tag == 274:
                fmt = "H" if typ == 3 else "I"
                return struct.unpack(endian + fmt, entry[8 : 8 + struct.calcsize(fmt)])[0]
    except (KeyError, struct.error):
        pass  # a broken EXIF block does not prevent reading the size
    return 1


def _tiff(f: BinaryIO) -> Tuple[int, int]:
    f.seek(0)
    endian = "<" if f.read(2) == b"II" else ">"
    f.seek(4)
    (offset,) = struct.unpack(endian + "I", f.read(4))
    f.seek(offset)
    (count,) = struct.unpack(endian + "H", f.read(2))
    entries = f.read(12 * count)
    values = {}
    for i in range(count):
        tag, typ = struct.unpack(endian + "HH", entries[12 * i : 12 * i + 4])
        if tag in (256, 257, 274):
            fmt = "H" if typ == 3 else "I"
            values[tag] = struct.unpack(endian + fmt, entries[12 * i + 8 : 12 * i + 8 + struct.calcsize(fmt)])[0]
    if 256 not in values or 257 not in values:
        raise ImageSizeError("TIFF without width and height tags")
    w, h = values[256], values[257]
    if values.get(274, 1) in _SWAPPING_ORIENTATIONS:
        w, h = h, w
    return w, h


def _webp(head: bytes) -> Tuple[int, int]:
    chunk = head[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame tag and start code
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit (size - 1) fields packed after a signature byte
        (bits,) = struct.unpack("<I", head[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit (size - 1) fields
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    raise ImageSizeError(f"unknown WebP chunk {chunk!r}")


def _fallback(path: str) -> Tuple[int, int]:
    try:
        import imagesize  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        w, h = imagesize.get(path)
        if w > 0 and h > 0:
            return w, h
    try:
        from PIL import Image  # type: ignore[import-not-found]
    except ImportError:
        raise ImageSizeError(
            f"{path}: unknown image format (JPEG, PNG, GIF, BMP, WebP and TIFF are read; install "
            f"`imagesize` or Pillow for others)"
        ) from None
    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except Exception as exc:  # Pillow raises several types for unreadable files
        raise ImageSizeError(f"{path}: not a readable image ({exc})") from None
