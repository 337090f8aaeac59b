#!/usr/bin/env python3
"""PyTorch-GAN's dcgan.py in PyTorch, for side-by-side speed checks with mcugan (not used by CI).

Written from the facts in docs (the dcgan.py notes): the same networks (Linear -> BatchNorm2d ->
nearest upsample + 3x3 convolutions, BatchNorm2d(n, 0.8) quirk; a discriminator of four strided
convolutions with Dropout2d(0.25)), weights_init_normal, BCE, Adam(2e-4, (0.5, 0.999)), batch 64,
generator step then discriminator step with separate real and fake passes. The digits are resized
to 32x32 as its transforms do (Pillow's bilinear resize), then scaled to [-1, 1].

  train --data DIR --epochs N [--threads T] [--limit N]
        train on IDX files (raw or .gz), data held in memory; prints one JSON summary line
"""

import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

LATENT = 100
SIDE = 32


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.init_size = SIDE // 4
        self.l1 = nn.Sequential(nn.Linear(LATENT, 128 * self.init_size**2))
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(128),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 128, 3, stride=1, padding=1),
            nn.BatchNorm2d(128, 0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 64, 3, stride=1, padding=1),
            nn.BatchNorm2d(64, 0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, 1, 3, stride=1, padding=1),
            nn.Tanh(),
        )

    def forward(self, z):
        out = self.l1(z).view(z.size(0), 128, self.init_size, self.init_size)
        return self.conv_blocks(out)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()

        def block(n_in, n_out, bn=True):
            layers = [nn.Conv2d(n_in, n_out, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True), nn.Dropout2d(0.25)]
            if bn:
                layers.append(nn.BatchNorm2d(n_out, 0.8))
            return layers

        self.model = nn.Sequential(
            *block(1, 16, bn=False), *block(16, 32), *block(32, 64), *block(64, 128)
        )
        self.adv_layer = nn.Sequential(nn.Linear(128 * (SIDE // 16) ** 2, 1), nn.Sigmoid())

    def forward(self, img):
        return self.adv_layer(self.model(img).view(img.size(0), -1))


def weights_init_normal(m):
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        torch.nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif name.find("BatchNorm2d") != -1:
        torch.nn.init.normal_(m.weight.data, 1.0, 0.02)
        torch.nn.init.constant_(m.bias.data, 0.0)


def read_idx(directory, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f:
                data = f.read()
            _, count, rows, cols = struct.unpack(">IIII", data[:16])
            return np.frombuffer(data, np.uint8, count * rows * cols, 16).reshape(count, rows, cols)
    sys.exit(f"no {name} in {directory}")


def train(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    images = read_idx(args.data, "train-images-idx3-ubyte")
    if args.limit:
        images = images[: args.limit]
    resized = np.stack(
        [np.asarray(Image.fromarray(im).resize((SIDE, SIDE), Image.BILINEAR)) for im in images]
    )
    data = torch.from_numpy(resized.astype(np.float32) / 255.0 * 2.0 - 1.0).unsqueeze(1)
    generator, discriminator = Generator(), Discriminator()
    generator.apply(weights_init_normal)
    discriminator.apply(weights_init_normal)
    loss = nn.BCELoss()
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    epoch_seconds = []
    for epoch in range(args.epochs):
        start = time.perf_counter()
        order = torch.randperm(data.size(0))
        for first in range(0, data.size(0), 64):
            real = data[order[first : first + 64]]
            if real.size(0) < 2:
                continue
            valid = torch.ones(real.size(0), 1)
            fake = torch.zeros(real.size(0), 1)
            opt_g.zero_grad()
            z = torch.randn(real.size(0), LATENT)
            gen = generator(z)
            g_loss = loss(discriminator(gen), valid)
            g_loss.backward()
            opt_g.step()
            opt_d.zero_grad()
            real_loss = loss(discriminator(real), valid)
            fake_loss = loss(discriminator(gen.detach()), fake)
            d_loss = (real_loss + fake_loss) / 2
            d_loss.backward()
            opt_d.step()
        epoch_seconds.append(time.perf_counter() - start)
        print(
            f"epoch {epoch + 1}/{args.epochs}: D {d_loss.item():.4f} G {g_loss.item():.4f} "
            f"({epoch_seconds[-1]:.2f} s)",
            flush=True,
        )
    summary = {
        "framework": f"pytorch {torch.__version__}",
        "threads": args.threads,
        "images": int(data.size(0)),
        "epochs": args.epochs,
        "epoch_seconds": epoch_seconds,
        "mean_epoch_seconds": sum(epoch_seconds) / len(epoch_seconds),
    }
    print(json.dumps(summary))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("--data", required=True)
    tr.add_argument("--epochs", type=int, default=1)
    tr.add_argument("--threads", type=int, default=1)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--limit", type=int)
    args = parser.parse_args()
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
