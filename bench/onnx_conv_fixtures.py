#!/usr/bin/env python3
"""The convolutional ONNX fixtures of tests/fixtures/onnx/ (called by bench/onnx_fixtures.py;
PyTorch, onnx and onnxruntime from PyPI, not used by CI, which only reads what this wrote).

Small generators, trained here on CPU for a few minutes each so that their images are digits
and shapes rather than noise, each exported with both of PyTorch's exporters:

  - dcgan-digits: a DCGAN of transposed convolutions (pytorch/examples' shape) for 28x28
    digits, latent [batch, 32, 1, 1]: ConvTranspose 7x7 from 1x1, then two 4x4 stride-2 ones;
  - dcganpy-digits: PyTorch-GAN dcgan.py's pattern at 32x32 (Linear, BatchNorm, nearest
    Upsample + 3x3 Conv twice, Conv, Tanh), narrower than dcgan.py's 128 channels; its default
    export is the book's snippet (docs/src/onnx.md), verbatim (readme/my_generator.onnx + .onnx.data);
  - rgb-shapes: a 16x16 RGB generator of coloured discs and squares (synthetic data): Linear,
    Unflatten, ConvTranspose 3x3 with output padding, Upsample, Conv 5x5, Sigmoid.

NAME-torchscript-opsetN.onnx is the TorchScript exporter's (dynamo=False), NAME-dynamo.onnx
(+ .onnx.data) the default exporter's with its defaults. NAME.expected.json holds onnxruntime's
outputs for fixed latents of the default export.
"""

import json
import os
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_idx_digits():
    """The offline digits (`mcugan data` makes them) as floats in [-1, 1], [N, 1, 28, 28]."""
    path = os.path.join(ROOT, "data/mnist-digits/train-images-idx3-ubyte")
    if not os.path.exists(path):
        raise SystemExit(f"{path} is missing: run `cargo run -p mcugan -- data` first")
    raw = np.fromfile(path, dtype=np.uint8)[16:].reshape(-1, 1, 28, 28)
    return torch.from_numpy(raw.astype(np.float32) / 127.5 - 1.0)


def shapes_dataset(n=4000, side=16, seed=0):
    """Coloured discs and squares on a dark background, [N, 3, side, side] in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    images = np.zeros((n, 3, side, side), np.float32)
    for i in range(n):
        colour = rng.uniform(0.3, 1.0, 3) * (rng.uniform(size=3) > 0.3)
        if colour.max() == 0:
            colour[rng.integers(3)] = 1.0
        cy, cx = rng.uniform(4, side - 4, 2)
        r = rng.uniform(2.5, 5)
        if i % 2 == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            mask = (abs(yy - cy) <= r * 0.8) & (abs(xx - cx) <= r * 0.8)
        images[i] = mask[None] * colour[:, None, None] + 0.05
    return torch.from_numpy(np.clip(images, 0, 1))


class DcganDigits(nn.Module):
    """A DCGAN for 28x28: ConvTranspose 7x7 from a 1x1 latent map, two stride-2 doublings."""

    def __init__(self, nz=32, ngf=24):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 2, 7, 1, 0, bias=False), nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, 1, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.main(z)


class DcganPyDigits(nn.Module):
    """dcgan.py's generator at 32x32, 32 channels instead of 128 (its BatchNorm eps quirk
    kept: the second positional argument of BatchNorm2d is eps)."""

    def __init__(self, latent=32, ch=32, channels=1, img_size=32):
        super().__init__()
        self.init_size = img_size // 4
        self.ch = ch
        self.l1 = nn.Sequential(nn.Linear(latent, ch * self.init_size ** 2))
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(ch),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ch, ch, 3, stride=1, padding=1),
            nn.BatchNorm2d(ch, 0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(ch, ch // 2, 3, stride=1, padding=1),
            nn.BatchNorm2d(ch // 2, 0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ch // 2, channels, 3, stride=1, padding=1),
            nn.Tanh(),
        )

    def forward(self, z):
        out = self.l1(z)
        out = out.view(out.shape[0], self.ch, self.init_size, self.init_size)
        return self.conv_blocks(out)


class RgbShapes(nn.Module):
    """16x16 RGB: Linear, ReLU, Unflatten, ConvTranspose 3x3 stride 2 with output padding,
    BatchNorm, LeakyReLU(0.1), Upsample, Conv 5x5, Sigmoid."""

    def __init__(self, latent=16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent, 32 * 4 * 4), nn.ReLU(),
            nn.Unflatten(1, (32, 4, 4)),
            nn.ConvTranspose2d(32, 16, 3, 2, 1, output_padding=1), nn.BatchNorm2d(16),
            nn.LeakyReLU(0.1),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(16, 3, 5, 1, 2), nn.Sigmoid())

    def forward(self, z):
        return self.net(z)


def discriminator(channels, side):
    """A small convolutional discriminator: stride-2 convolutions down to 4x4 or so."""
    layers, c, s = [], channels, side
    for out in (16, 32, 64):
        layers += [nn.Conv2d(c, out, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c, s = out, s // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * s * s, 1))


def train(generator, data, latent_shape, epochs, seed, pixel_range="tanh"):
    """A DCGAN training loop (BCE with logits, Adam 2e-4, betas (0.5, 0.999), batch 64)."""
    torch.manual_seed(seed)
    d = discriminator(data.shape[1], data.shape[2])
    opt_g = torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    for epoch in range(epochs):
        order = torch.randperm(len(data))
        for start in range(0, len(data) - 63, 64):
            real = data[order[start:start + 64]]
            if pixel_range == "sigmoid":
                real = real * 2 - 1
            z = torch.randn(64, *latent_shape)
            fake = generator(z)
            if pixel_range == "sigmoid":
                fake = fake * 2 - 1
            ones, zeros = torch.ones(64, 1), torch.zeros(64, 1)
            opt_g.zero_grad()
            bce(d(fake), ones).backward()
            opt_g.step()
            opt_d.zero_grad()
            ((bce(d(real), ones) + bce(d(fake.detach()), zeros)) / 2).backward()
            opt_d.step()
        print(f"  epoch {epoch + 1}/{epochs}", flush=True)
    generator.eval()
    return generator


def export_torchscript(module, z, path, opset):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (z,), path, opset_version=opset, dynamo=False,
                          input_names=["z"], output_names=["image"],
                          dynamic_axes={"z": {0: "batch"}, "image": {0: "batch"}})
    onnx.checker.check_model(onnx.load(path))


def export_default(module, z, path):
    """PyTorch's default exporter with its defaults (dynamo, its opset, weights in
    NAME.onnx.data): what a user who follows the book gets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (z,), path, input_names=["z"], output_names=["image"],
                          dynamic_axes={"z": {0: "batch"}})
    onnx.checker.check_model(path)


def readme_snippet(generator, latent_dim, out_dir):
    """The book's export snippet (docs/src/onnx.md), verbatim, run in `out_dir`."""
    cwd = os.getcwd()
    os.makedirs(out_dir, exist_ok=True)
    os.chdir(out_dir)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # --- the book's snippet, verbatim ---
            import torch
            generator.eval()
            torch.onnx.export(generator, torch.randn(1, latent_dim), "my_generator.onnx",
                              input_names=["z"], output_names=["image"], dynamic_axes={"z": {0: "batch"}})
            # --- end of the snippet ---
    finally:
        os.chdir(cwd)


def record(path, latent_shape, count=4, seed=21):
    """onnxruntime's outputs for fixed latents: NAME.expected.json beside the default export."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((count, *latent_shape)).astype(np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: z[i:i + 1]})[0] for i in range(count)]
    expected = {
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "output_shape": list(outputs[0].shape),
        "latents": z.reshape(count, -1).tolist(),
        "outputs": [o.reshape(-1).tolist() for o in outputs],
    }
    with open(path[: -len(".onnx")] + ".expected.json", "w") as f:
        json.dump(expected, f)


def write_conv_fixtures(out):
    """Trains and exports the convolutional fixtures into the folder `out`."""
    digits = read_idx_digits()
    digits32 = F.interpolate(digits, size=32, mode="bilinear", align_corners=False)

    print("training dcgan-digits (ConvTranspose DCGAN, 28x28)", flush=True)
    dcgan = train(DcganDigits(), digits, (32, 1, 1), epochs=8, seed=1)
    z4 = torch.randn(1, 32, 1, 1)
    export_torchscript(dcgan, z4, os.path.join(out, "dcgan-digits-torchscript-opset17.onnx"), 17)
    export_default(dcgan, z4, os.path.join(out, "dcgan-digits-dynamo.onnx"))
    record(os.path.join(out, "dcgan-digits-dynamo.onnx"), (32, 1, 1))

    print("training dcganpy-digits (dcgan.py's pattern, 32x32)", flush=True)
    dcganpy = train(DcganPyDigits(), digits32, (32,), epochs=6, seed=2)
    z2 = torch.randn(1, 32)
    export_torchscript(dcganpy, z2, os.path.join(out, "dcganpy-digits-torchscript-opset11.onnx"), 11)
    export_torchscript(dcganpy, z2, os.path.join(out, "dcganpy-digits-torchscript-opset10.onnx"), 10)
    readme_snippet(dcganpy, 32, os.path.join(out, "readme"))
    record(os.path.join(out, "readme/my_generator.onnx"), (32,))

    print("training rgb-shapes (16x16 RGB)", flush=True)
    rgb = train(RgbShapes(), shapes_dataset(), (16,), epochs=12, seed=3, pixel_range="sigmoid")
    z16 = torch.randn(1, 16)
    export_torchscript(rgb, z16, os.path.join(out, "rgb-shapes-torchscript-opset13.onnx"), 13)
    export_default(rgb, z16, os.path.join(out, "rgb-shapes-dynamo.onnx"))
    record(os.path.join(out, "rgb-shapes-dynamo.onnx"), (16,))


class Refused(nn.Module):
    """A generator with one convolution the chip does not run (`kind`)."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.fc = nn.Linear(8, 4 * 4 * 4)
        conv = {
            "grouped": nn.Conv2d(4, 4, 3, 1, 1, groups=2),
            "dilated": nn.Conv2d(4, 4, 3, 1, 2, dilation=2),
            "9x9": nn.Conv2d(4, 4, 9, 1, 4),
        }.get(kind, nn.Conv2d(4, 4, 3, 1, 1))
        self.conv = conv
        self.out = nn.Conv2d(4, 2 if kind == "two-channels" else 1, 3, 1, 1)

    def forward(self, z):
        x = self.fc(z).view(-1, 4, 4, 4)
        if self.kind == "bilinear":
            x = F.interpolate(x, scale_factor=2, mode="bilinear")
        if self.kind == "batchnorm-after-activation":
            # A per-channel scale and shift between an activation and a padded convolution,
            # on a map too large (4x64x64 > 4,096 values) for a dense layer of its own.
            for factor in (4, 2, 2):
                x = F.interpolate(x, scale_factor=factor, mode="nearest")
                x = F.leaky_relu(self.conv(x), 0.2)
            x = x * torch.arange(1.0, 5.0).view(1, 4, 1, 1) + 0.5
            return torch.tanh(self.out(x))
        x = F.leaky_relu(self.conv(x), 0.2)
        return torch.tanh(self.out(x))


def write_conv_refusals(out):
    """Convolutional generators the chip cannot run, each refused by name."""
    torch.manual_seed(5)
    for kind in ["grouped", "dilated", "9x9", "bilinear", "batchnorm-after-activation",
                 "two-channels"]:
        module = Refused(kind).eval()
        export_torchscript(module, torch.randn(1, 8), os.path.join(out, f"refuse-conv-{kind}.onnx"), 13)
