"""Generate abstract images with a tiny random-weight convolutional network on the CPU.

PNG files are written with a minimal encoder (zlib + struct) so the model needs no Pillow.
"""

import os
import struct
import tempfile
import zlib

from cog import BasePredictor, Input, Path


def write_png(path: str, rgb: bytes, width: int, height: int) -> None:
    """Write 8-bit RGB pixels (row-major, no padding) as a PNG file."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    stride = width * 3
    # Each scanline starts with filter type 0 (none).
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit depth, colour type RGB
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", header))
        fh.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        fh.write(chunk(b"IEND", b""))


class Predictor(BasePredictor):
    def setup(self) -> None:
        import torch

        self.torch = torch
        torch.manual_seed(1234)  # fixed weights: the same seed always draws the same picture
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1),
            torch.nn.Tanh(),
            torch.nn.Conv2d(16, 16, 3, padding=1),
            torch.nn.Tanh(),
            torch.nn.Conv2d(16, 3, 3, padding=1),
            torch.nn.Sigmoid(),
        ).eval()

    def predict(
        self,
        size: int = Input(description="Width and height of each image, in pixels", default=64, ge=8, le=512),
        count: int = Input(description="Number of images", default=1, ge=1, le=4),
        seed: int = Input(description="Random seed. Leave blank to randomize", default=None),
    ) -> list[Path]:
        torch = self.torch
        if seed is None:
            seed = int.from_bytes(os.urandom(2), "big")
        print(f"Using seed: {seed}")
        generator = torch.Generator().manual_seed(seed)
        coarse = max(2, size // 8)
        with torch.no_grad():
            noise = torch.rand((count, 3, coarse, coarse), generator=generator) * 4 - 2
            smooth = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
            images = (self.net(smooth) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        out_dir = tempfile.mkdtemp(prefix="image-")
        paths = []
        for i in range(count):
            path = os.path.join(out_dir, f"out-{i}.png")
            write_png(path, bytes(images[i].flatten().tolist()), size, size)
            paths.append(Path(path))
        return paths
