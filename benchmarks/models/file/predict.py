"""A 10 MB PNG of noise (stored, not compressed) written to a fresh file on every prediction."""

import os
import struct
import tempfile
import zlib

from cog import BaseRunner, Input, Path

SIDE = 1826  # 1826 * 1826 * 3 bytes of pixels: a 10.0 MB file


def png(rgb: bytes, width: int, height: int) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 0))
            + chunk(b"IEND", b""))


class Runner(BaseRunner):
    def setup(self) -> None:
        self.data = png(os.urandom(SIDE * SIDE * 3), SIDE, SIDE)

    def run(self, as_file: bool = Input(description="Return the PNG as a file", default=True)) -> list[Path]:
        fd, path = tempfile.mkstemp(suffix=".png", prefix="bench-")
        with os.fdopen(fd, "wb") as f:
            f.write(self.data)
        if as_file:
            return [Path(path)]
        os.unlink(path)  # written all the same, so the two modes differ only by the upload
        return []
