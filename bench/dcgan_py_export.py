#!/usr/bin/env python3
"""Exports PyTorch-GAN dcgan.py's generator at its full size (latent 100, 128 channels, 32x32,
one channel; untrained, seed 0) with PyTorch's default ONNX exporter, for the firmware benchmark
of a generator of that size (`cargo xtask bench-firmware --dcgan-py`). Not used by CI.

  python bench/dcgan_py_export.py OUT.onnx      (writes OUT.onnx and OUT.onnx.data)
"""

import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnx_conv_fixtures import DcganPyDigits  # noqa: E402


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    torch.manual_seed(0)
    generator = DcganPyDigits(latent=100, ch=128).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(generator, (torch.randn(1, 100),), sys.argv[1], input_names=["z"],
                          output_names=["image"], dynamic_axes={"z": {0: "batch"}})
    params = sum(p.numel() for p in generator.parameters())
    print(f"wrote {sys.argv[1]}: dcgan.py's generator, {params:,} parameters")


if __name__ == "__main__":
    main()
