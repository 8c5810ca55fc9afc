"""Draw landscapes on the CPU with torch: a sky from midday to sunset, the sun, three mountain
ridges and a lake that mirrors them, each picked by the seed (the same seed, the same pictures).

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

    def predict(
        self,
        size: int = Input(description="Width and height of each image, in pixels", default=64, ge=8, le=512),
        count: int = Input(description="Number of images", default=1, ge=1, le=4),
        seed: int = Input(description="Random seed. Leave blank to randomize", default=None),
    ) -> list[Path]:
        if seed is None:
            seed = int.from_bytes(os.urandom(2), "big")
        print(f"Using seed: {seed}")
        out_dir = tempfile.mkdtemp(prefix="image-")
        paths = []
        for i in range(count):
            generator = self.torch.Generator().manual_seed(seed * 4 + i)
            with self.torch.no_grad():
                image = self.landscape(size, generator)
            path = os.path.join(out_dir, f"out-{i}.png")
            write_png(path, bytes(image.flatten().tolist()), size, size)
            paths.append(Path(path))
        return paths

    def landscape(self, size: int, generator):
        """Sky, sun, three mountain ridges and a lake with the sun's reflection, as uint8 HWC."""
        torch = self.torch
        rand = lambda *shape: torch.rand(shape, generator=generator)  # noqa: E731
        y = torch.linspace(0, 1, size).view(size, 1, 1)
        x = torch.linspace(0, 1, size).view(1, size, 1)
        dusk = float(rand(1))  # 0: midday blue, 1: sunset orange
        top = torch.tensor([0.20, 0.45, 0.85]) * (1 - dusk) + torch.tensor([0.25, 0.15, 0.45]) * dusk
        low = torch.tensor([0.70, 0.85, 1.00]) * (1 - dusk) + torch.tensor([1.00, 0.55, 0.25]) * dusk
        img = (top * (1 - y) + low * y).expand(size, size, 3).clone()
        sun_x, sun_y = 0.2 + 0.6 * float(rand(1)), 0.15 + 0.25 * float(rand(1))
        sun = ((x - sun_x) ** 2 + (y - sun_y) ** 2).sqrt() < 0.08
        img = torch.where(sun, torch.tensor([1.0, 0.92, 0.55]), img)
        horizon = 0.72
        for layer, shade in enumerate((0.55, 0.38, 0.22)):  # far to near: darker and lower
            knots = rand(6 + 2 * layer) * 0.22 + 0.30 + 0.12 * layer
            ridge = torch.nn.functional.interpolate(knots.view(1, 1, -1), size=size, mode="linear",
                                                    align_corners=True).view(1, size, 1)
            colour = torch.tensor([0.25, 0.35, 0.30]) * shade / 0.55 + torch.tensor([0.05, 0.05, 0.10]) * dusk
            img = torch.where((y > ridge) & (y < horizon), colour, img)
        water = y >= horizon
        mirrored = img.flip(0)  # the sky and the sun upside down, darkened, with ripples
        ripple = 0.85 + 0.1 * torch.sin(y * size * 1.7)
        img = torch.where(water, mirrored * ripple * torch.tensor([0.75, 0.85, 0.95]), img)
        return (img.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
