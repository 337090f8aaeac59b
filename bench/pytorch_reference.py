#!/usr/bin/env python3
"""The reference MLP GAN in PyTorch, for side-by-side checks with mcugan (not used by CI).

Written from the facts in ../shared/reference/seed-gan.md (PyTorch-GAN's gan.py): the same
networks, BatchNorm1d(n, 0.8) quirk, BCE, Adam(2e-4, (0.5, 0.999)), batch 64, generator step then
discriminator step on the same fakes detached.

  check-step DUMP.safetensors   replay steps dumped by `cargo run --release -p mcugan-train --example
                                dump_step` from the same initial weights, batches and latents, and
                                compare losses and weights
  train --data DIR --epochs N   train on IDX files (raw or .gz) and report seconds per epoch
        [--threads T] [--dataloader] [--out DIR] [--limit N]
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

LATENT = 100
PIXELS = 784


def block(n_in, n_out, normalize=True):
    layers = [nn.Linear(n_in, n_out)]
    if normalize:
        # The reference passes 0.8 positionally: it is eps, not momentum.
        layers.append(nn.BatchNorm1d(n_out, 0.8))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            *block(LATENT, 128, normalize=False),
            *block(128, 256),
            *block(256, 512),
            *block(512, 1024),
            nn.Linear(1024, PIXELS),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.model(z)


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(PIXELS, 512),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 256),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(256, 1),
            nn.Sigmoid(),
        )

    def forward(self, img):
        return self.model(img.view(img.size(0), -1))


def make_optimizers(generator, discriminator):
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    return opt_g, opt_d


def train_step(generator, discriminator, opt_g, opt_d, real, z, loss=nn.BCELoss()):
    valid = torch.ones(real.size(0), 1)
    fake = torch.zeros(real.size(0), 1)
    opt_g.zero_grad()
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
    return d_loss.item(), g_loss.item()


def check_step(path):
    from safetensors.torch import load_file

    dump = load_file(path)
    generator, discriminator = Generator(), Discriminator()
    for net, name in ((generator, "generator"), (discriminator, "discriminator")):
        state = {k[len(f"init.{name}."):]: v for k, v in dump.items() if k.startswith(f"init.{name}.")}
        net.load_state_dict(state)
        net.train()
    opt_g, opt_d = make_optimizers(generator, discriminator)
    ours = dump["losses"].tolist()
    steps = len(ours) // 2
    worst_loss = 0.0
    for step in range(steps):
        d, g = train_step(generator, discriminator, opt_g, opt_d, dump[f"real.{step}"], dump[f"z.{step}"])
        print(f"step {step}: PyTorch D {d:.6f} G {g:.6f} | mcugan D {ours[2*step]:.6f} G {ours[2*step+1]:.6f}")
        worst_loss = max(worst_loss, abs(d - ours[2 * step]), abs(g - ours[2 * step + 1]))
    # Biases of the Linears that feed a BatchNorm have a true gradient of zero (BatchNorm
    # subtracts the batch mean); Adam's normalised step turns their rounding noise into full
    # lr-sized moves in either framework, so they are reported but not judged.
    # The running means of those BatchNorms include the same biases.
    cancelled = {"generator.model.2.bias", "generator.model.5.bias", "generator.model.8.bias",
                 "generator.model.3.running_mean", "generator.model.6.running_mean",
                 "generator.model.9.running_mean"}
    worst, noise = {}, {}
    for net, name in ((generator, "generator"), (discriminator, "discriminator")):
        for k, v in net.state_dict().items():
            key = f"after.{name}.{k}"
            if key in dump:
                diff = (v.double() - dump[key].double()).abs().max().item()
                scale = v.double().abs().max().item() or 1.0
                (noise if f"{name}.{k}" in cancelled else worst)[f"{name}.{k}"] = diff / scale
    name, rel = max(worst.items(), key=lambda kv: kv[1])
    print(f"largest loss difference {worst_loss:.2e}; largest relative weight difference {rel:.2e} ({name})")
    print("biases cancelled by BatchNorm (not judged): " + ", ".join(f"{k} {v:.1e}" for k, v in noise.items()))
    # Losses must agree closely. Weights agree to float noise, which Adam amplifies where a
    # gradient is near zero (every element's step is normalised to about lr): 1 % of the
    # largest weight after a few dozen steps.
    ok = worst_loss < 1e-4 and rel < 1e-2
    print("MATCH" if ok else "MISMATCH")
    return 0 if ok else 1


def read_idx(directory, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f:
                data = f.read()
            magic, count = struct.unpack(">II", data[:8])
            if magic == 0x803:
                rows, cols = struct.unpack(">II", data[8:16])
                return np.frombuffer(data, np.uint8, count * rows * cols, 16).reshape(count, rows * cols)
            return np.frombuffer(data, np.uint8, count, 8)
    sys.exit(f"no {name} in {directory}")


def save_grid(images, path):
    """5x5 grid, min-max normalised, 2-pixel black padding, as a binary PGM (no extra deps)."""
    imgs = images[:25].reshape(-1, 28, 28)
    lo, hi = imgs.min(), imgs.max()
    imgs = ((imgs - lo) / max(hi - lo, 1e-5) * 255).round().astype(np.uint8)
    side = 5 * 30 + 2
    grid = np.zeros((side, side), np.uint8)
    for i, img in enumerate(imgs):
        y, x = 2 + (i // 5) * 30, 2 + (i % 5) * 30
        grid[y:y + 28, x:x + 28] = img
    with open(path, "wb") as f:
        f.write(b"P5 %d %d 255\n" % (side, side) + grid.tobytes())


def train(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    images = read_idx(args.data, "train-images-idx3-ubyte")
    if args.limit:
        images = images[: args.limit]
    data = torch.from_numpy(images.astype(np.float32) / 255.0 * 2.0 - 1.0)
    generator, discriminator = Generator(), Discriminator()
    opt_g, opt_d = make_optimizers(generator, discriminator)
    if args.dataloader:
        # The reference script's style: a Dataset of images through a DataLoader.
        from torch.utils.data import DataLoader, TensorDataset

        loader = DataLoader(TensorDataset(data), batch_size=64, shuffle=True)
        batches = lambda: (b[0] for b in loader)
    else:
        def batches():
            order = torch.randperm(data.size(0))
            for start in range(0, data.size(0), 64):
                yield data[order[start:start + 64]]
    epoch_seconds = []
    done = 0
    for epoch in range(args.epochs):
        start = time.perf_counter()
        for real in batches():
            if real.size(0) < 2:
                continue
            z = torch.randn(real.size(0), LATENT)
            d, g = train_step(generator, discriminator, opt_g, opt_d, real, z)
            if args.out and done % 400 == 0:
                with torch.no_grad():
                    pass
            done += 1
        epoch_seconds.append(time.perf_counter() - start)
        print(f"epoch {epoch + 1}/{args.epochs}: D {d:.4f} G {g:.4f} ({epoch_seconds[-1]:.2f} s)", flush=True)
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with torch.no_grad():
                generator.eval()
                save_grid(generator(torch.randn(25, LATENT)).numpy(), os.path.join(args.out, f"epoch-{epoch + 1}.pgm"))
                generator.train()
    summary = {
        "framework": f"pytorch {torch.__version__}",
        "threads": args.threads,
        "dataloader": args.dataloader,
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
    check = sub.add_parser("check-step")
    check.add_argument("dump")
    tr = sub.add_parser("train")
    tr.add_argument("--data", required=True)
    tr.add_argument("--epochs", type=int, default=1)
    tr.add_argument("--threads", type=int, default=1)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--dataloader", action="store_true")
    tr.add_argument("--out")
    tr.add_argument("--limit", type=int)
    args = parser.parse_args()
    if args.command == "check-step":
        return check_step(args.dump)
    return train(args)


if __name__ == "__main__":
    sys.exit(main())
