"""Writes model-tools/tests/fixtures/pillow-resize-28-to-32.bin: what Pillow's bilinear resize
(the resize of torchvision's transforms.Resize(32) on PIL images, as dcgan.py applies it to the
digits) makes of three 28x28 test patterns. The Rust resize is held to these bytes.

Run with any Python that has Pillow:  python3 bench/resize_fixture.py
"""
from pathlib import Path

from PIL import Image


def patterns():
    # The same patterns as model-tools/tests/resize.rs builds.
    ramp = bytes((x * 9 + y * 5) % 256 for y in range(28) for x in range(28))
    noise = bytes((i * 2654435761 >> 7) % 256 for i in range(28 * 28))
    disc = bytes(
        255 if (x - 13.5) ** 2 + (y - 13.5) ** 2 < 60 else 0 for y in range(28) for x in range(28)
    )
    return [ramp, noise, disc]


out = bytearray()
for pattern in patterns():
    image = Image.frombytes("L", (28, 28), pattern)
    out += image.resize((32, 32), Image.BILINEAR).tobytes()
path = Path(__file__).resolve().parent.parent / "model-tools/tests/fixtures/pillow-resize-28-to-32.bin"
path.write_bytes(bytes(out))
print(f"{path}: {len(out)} bytes")
