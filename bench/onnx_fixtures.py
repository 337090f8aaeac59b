#!/usr/bin/env python3
"""Writes the ONNX fixtures of tests/fixtures/onnx/ (PyTorch, onnx and onnxruntime from PyPI; not
used by CI, which only reads what this wrote and committed).

  python bench/onnx_fixtures.py [--out tests/fixtures/onnx]

`cargo xtask onnx-fixtures` makes the virtual environment (.venv-onnx) and runs this.

Importable fixtures: MLP generators exported by torch.onnx.export with the TorchScript exporter
(opsets 11, 13, 17) and the dynamo exporter (opset 18), among them the shipped digits generator
(models/mnist-digits/generator.safetensors loaded into gan.py's Generator) and the shipped
conditional one (cgan.py's Generator, inputs z and an int64 label). Each comes with
NAME.expected.json: fixed latent vectors and the outputs onnxruntime computed for them, which the
tests compare with tract's.

Convolutional generators (trained here on the offline digits and on synthetic RGB shapes, each
with both exporters, the default one as PyTorch writes it: dynamo, its opset, weights in
NAME.onnx.data; the book's snippet verbatim among them): see bench/onnx_conv_fixtures.py.

Refused fixtures (refuse-*.onnx): graphs that are not a generator the chip can run; the tests
check that the importer names their nodes. Damaged and hostile files (bench/onnx_hostile.py) go
to fuzz/corpus/onnx_import.
"""

import argparse
import json
import os
import sys
import warnings

import numpy as np
import onnx
from onnx_conv_fixtures import write_conv_fixtures, write_conv_refusals
from onnx_hostile import write_hostile
import onnxruntime as ort
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def block(n_in, n_out, normalize=True, slope=0.2):
    layers = [nn.Linear(n_in, n_out)]
    if normalize:
        # gan.py passes 0.8 positionally: it is eps, not momentum.
        layers.append(nn.BatchNorm1d(n_out, 0.8))
    layers.append(nn.LeakyReLU(slope, inplace=True))
    return layers


class GanPyGenerator(nn.Module):
    """PyTorch-GAN's gan.py generator, with its `img.view(batch, *img_shape)` at the end."""

    def __init__(self, latent=100, side=28):
        super().__init__()
        self.side = side
        self.model = nn.Sequential(
            *block(latent, 128, normalize=False),
            *block(128, 256),
            *block(256, 512),
            *block(512, 1024),
            nn.Linear(1024, side * side),
            nn.Tanh(),
        )

    def forward(self, z):
        img = self.model(z)
        return img.view(img.size(0), 1, self.side, self.side)


class CganPyGenerator(nn.Module):
    """PyTorch-GAN's cgan.py generator at 28x28: `cat(label_emb(labels), noise)` into gan.py's MLP."""

    def __init__(self, latent=100, classes=10, side=28):
        super().__init__()
        self.side = side
        self.label_emb = nn.Embedding(classes, classes)
        self.model = nn.Sequential(
            *block(latent + classes, 128, normalize=False),
            *block(128, 256),
            *block(256, 512),
            *block(512, 1024),
            nn.Linear(1024, side * side),
            nn.Tanh(),
        )

    def forward(self, noise, labels):
        gen_input = torch.cat((self.label_emb(labels), noise), -1)
        img = self.model(gen_input)
        return img.view(img.size(0), 1, self.side, self.side)


class SmallGemm(nn.Module):
    """Linear + BatchNorm + LeakyReLU(0.1) twice, Linear + Tanh, flat 8x8 output."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(
            *block(16, 32, normalize=True, slope=0.1),
            *block(32, 48, normalize=True, slope=0.1),
            nn.Linear(48, 64),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.model(z)


class SmallMatMul(nn.Module):
    """Explicit `x @ W + b` (MatMul + Add), ReLU, Identity, Sigmoid, Flatten and Unsqueeze:
    a 1x12x12 image."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w1 = nn.Parameter(torch.randn(20, 40, generator=g) * 0.3)
        self.b1 = nn.Parameter(torch.randn(40, generator=g) * 0.1)
        self.w2 = nn.Parameter(torch.randn(40, 144, generator=g) * 0.3)
        self.b2 = nn.Parameter(torch.randn(144, generator=g) * 0.1)
        self.identity = nn.Identity()

    def forward(self, z):
        h = torch.relu(self.identity(z @ self.w1 + self.b1))
        img = torch.sigmoid(h @ self.w2 + self.b2)
        return torch.flatten(img.view(-1, 12, 12), 1).view(-1, 12, 12).unsqueeze(1)


class SmallDeconv(nn.Module):
    """A DCGAN-style generator, untrained: Linear, view, ConvTranspose2d, BatchNorm2d, Relu."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4 * 4 * 4)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(4, 2, 4, 2, 1),
            nn.BatchNorm2d(2),
            nn.ReLU(),
            nn.ConvTranspose2d(2, 1, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.up(self.fc(z).view(-1, 4, 4, 4))


class TwoOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(8, 4)

    def forward(self, z):
        return torch.tanh(self.a(z)), torch.tanh(self.b(z))


def randomise_batchnorm(module, seed):
    """Trained-looking BatchNorm statistics, so that folding them is exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            m.weight.data.copy_(1 + torch.randn(n, generator=g) * 0.2)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


def load_shipped(module, model="mnist-digits"):
    from safetensors.torch import load_file

    path = os.path.join(ROOT, f"models/{model}/generator.safetensors")
    state = load_file(path)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        sys.exit(f"{path}: keys do not match gan.py's generator: {missing} {unexpected}")


def export(module, latent, path, opset, dynamo, inputs=None):
    module.eval()
    args = inputs if inputs is not None else (torch.randn(1, latent),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, args, path, opset_version=opset, dynamo=True,
                              external_data=False)
        else:
            torch.onnx.export(module, args, path, opset_version=opset, dynamo=False,
                              input_names=["z"], output_names=["image"],
                              dynamic_axes={"z": {0: "batch"}, "image": {0: "batch"}})
    onnx.checker.check_model(onnx.load(path))


def export_unoptimized(module, latent, path):
    """The default (dynamo) exporter with its graph optimizer off, weights inline."""
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, latent),), path, input_names=["z"],
                          dynamic_axes={"z": {0: "batch"}}, optimize=False,
                          external_data=False)
    onnx.checker.check_model(onnx.load(path))


def record(path, latent, count=4, seed=11):
    """Runs onnxruntime on fixed latents; writes NAME.expected.json beside the model."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((count, latent)).astype(np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: z[i : i + 1]})[0] for i in range(count)]
    shape = list(outputs[0].shape)
    expected = {
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "output_shape": shape,
        "latents": z.tolist(),
        "outputs": [o.reshape(-1).tolist() for o in outputs],
    }
    with open(path[: -len(".onnx")] + ".expected.json", "w") as f:
        json.dump(expected, f)


def export_conditional(module, latent, path, opset):
    module.eval()
    args = (torch.randn(1, latent), torch.tensor([3], dtype=torch.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, path, opset_version=opset, dynamo=False,
                          input_names=["z", "label"], output_names=["image"],
                          dynamic_axes={"z": {0: "batch"}, "label": {0: "batch"},
                                        "image": {0: "batch"}})
    onnx.checker.check_model(onnx.load(path))


def record_conditional(path, latent, classes, count=4, seed=12):
    """onnxruntime's images for fixed latents and labels: NAME.expected.json beside the model."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((count, latent)).astype(np.float32)
    labels = (np.arange(count) * 3 % classes).astype(np.int64)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = [session.run(None, {"z": z[i : i + 1], "label": labels[i : i + 1]})[0]
               for i in range(count)]
    expected = {
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "output_shape": list(outputs[0].shape),
        "latents": z.tolist(),
        "labels": labels.tolist(),
        "outputs": [o.reshape(-1).tolist() for o in outputs],
    }
    with open(path[: -len(".onnx")] + ".expected.json", "w") as f:
        json.dump(expected, f)


def handmade(path, nodes, inputs, outputs, initializers, opset=13):
    graph = helper.make_graph(nodes, os.path.basename(path), inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/onnx"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    out = lambda name: os.path.join(args.out, name)
    torch.manual_seed(0)

    # The shipped generator as gan.py exports it (TorchScript exporter, opset 17).
    gan = GanPyGenerator()
    load_shipped(gan)
    export(gan, 100, out("gan-digits-opset17.onnx"), 17, dynamo=False)
    record(out("gan-digits-opset17.onnx"), 100)


    small = SmallGemm()
    randomise_batchnorm(small, 1)
    export(small, 16, out("small-gemm-opset11.onnx"), 11, dynamo=False)
    record(out("small-gemm-opset11.onnx"), 16)

    matmul = SmallMatMul()
    export(matmul, 20, out("small-matmul-sigmoid-opset13.onnx"), 13, dynamo=False)
    record(out("small-matmul-sigmoid-opset13.onnx"), 20)

    # The dynamo exporter on a small gan.py-shaped generator (latent 24, 16x16 images).
    dyn = GanPyGenerator(latent=24, side=16)
    dyn.model = nn.Sequential(
        *block(24, 32, normalize=False),
        *block(32, 64),
        nn.Linear(64, 256),
        nn.Tanh(),
    )
    randomise_batchnorm(dyn, 2)
    export(dyn, 24, out("small-dynamo-opset18.onnx"), 18, dynamo=True)
    record(out("small-dynamo-opset18.onnx"), 24)

    # Wider than the 1,024 the firmware's buffers held before they were sized from the model:
    # 64x64 images (4,096 outputs). The last layer's weights are smooth bumps, so the images
    # are shapes rather than noise.
    wide = GanPyGenerator(latent=8, side=64)
    wide.model = nn.Sequential(*block(8, 64, normalize=False), nn.Linear(64, 64 * 64), nn.Tanh())
    with torch.no_grad():
        yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        g = torch.Generator().manual_seed(4)
        centres = torch.rand(64, 2, generator=g) * 64
        bumps = torch.exp(-((yy[None] - centres[:, 0, None, None]) ** 2
                            + (xx[None] - centres[:, 1, None, None]) ** 2) / 60.0)
        wide.model[2].weight.copy_(bumps.reshape(64, -1).T * 2.0)
        wide.model[2].bias.fill_(-1.0)
    export(wide, 8, out("wide-64x64-opset17.onnx"), 17, dynamo=False)
    record(out("wide-64x64-opset17.onnx"), 8, count=2)

    # An untrained DCGAN-style generator (Linear, view, two ConvTranspose2d, BatchNorm2d).
    deconv = SmallDeconv()
    randomise_batchnorm(deconv, 6)
    export(deconv, 8, out("small-deconv-opset13.onnx"), 13, dynamo=False)
    record(out("small-deconv-opset13.onnx"), 8)
    # The same with the default exporter's optimizer off (BatchNorm and the shape arithmetic
    # left in the graph), weights inline.
    export_unoptimized(deconv, 8, out("small-deconv-dynamo-unoptimized.onnx"))

    # Refused: two outputs; a weight that is a graph input; a bad initializer.
    two = TwoOutputs()
    two.eval()
    torch.onnx.export(two, (torch.randn(1, 8),), out("refuse-two-outputs.onnx"), opset_version=13,
                      dynamo=False, input_names=["z"], output_names=["a", "b"])

    f32 = TensorProto.FLOAT
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b")
    handmade(
        out("refuse-weight-input.onnx"),
        [helper.make_node("Gemm", ["z", "w_in", "b"], ["y"], name="gemm_with_input_weight",
                          transB=1),
         helper.make_node("Tanh", ["y"], ["image"], name="tanh")],
        [helper.make_tensor_value_info("z", f32, [1, 8]),
         helper.make_tensor_value_info("w_in", f32, [16, 8])],
        [helper.make_tensor_value_info("image", f32, [1, 16])],
        [b],
    )
    bad_w = numpy_helper.from_array(rng.standard_normal((16, 9)).astype(np.float32), "w")
    handmade(
        out("refuse-bad-initializer.onnx"),
        [helper.make_node("Gemm", ["z", "w", "b"], ["y"], name="gemm_misfit", transB=1),
         helper.make_node("Tanh", ["y"], ["image"], name="tanh")],
        [helper.make_tensor_value_info("z", f32, [1, 8])],
        [helper.make_tensor_value_info("image", f32, [1, 16])],
        [bad_w, b],
    )
    # A hidden Softmax and an output Exp: two unsupported nodes, both to be listed.
    handmade(
        out("refuse-two-unsupported.onnx"),
        [helper.make_node("Gemm", ["z", "w", "b"], ["h"], name="fc1", transB=1),
         helper.make_node("Softmax", ["h"], ["s"], name="hidden_softmax", axis=1),
         helper.make_node("Exp", ["s"], ["image"], name="output_exp")],
        [helper.make_tensor_value_info("z", f32, [1, 8])],
        [helper.make_tensor_value_info("image", f32, [1, 16])],
        [w, b],
    )
    # A hidden Tanh: the chip's hidden layers are LeakyRelu/Relu only.
    w2 = numpy_helper.from_array(rng.standard_normal((4, 16)).astype(np.float32), "w2")
    b2 = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b2")
    handmade(
        out("refuse-hidden-tanh.onnx"),
        [helper.make_node("Gemm", ["z", "w", "b"], ["h"], name="fc1", transB=1),
         helper.make_node("Tanh", ["h"], ["t"], name="hidden_tanh"),
         helper.make_node("Gemm", ["t", "w2", "b2"], ["y"], name="fc2", transB=1),
         helper.make_node("Sigmoid", ["y"], ["image"], name="out")],
        [helper.make_tensor_value_info("z", f32, [1, 8])],
        [helper.make_tensor_value_info("image", f32, [1, 4])],
        [w, b, w2, b2],
    )
    # An image-shaped input (an autoencoder's decoder fed a 4x4 map): not one latent vector.
    handmade(
        out("refuse-image-input.onnx"),
        [helper.make_node("Flatten", ["z"], ["f"], name="flatten"),
         helper.make_node("Gemm", ["f", "w16", "b"], ["y"], name="fc", transB=1),
         helper.make_node("Tanh", ["y"], ["image"], name="tanh")],
        [helper.make_tensor_value_info("z", f32, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("image", f32, [1, 16])],
        [numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w16"), b],
    )
    # A conditional generator that puts the label's row after the latent vector: the chip's
    # first layer reads the class row first (cgan.py's order), so it is refused by name.
    i64 = TensorProto.INT64
    handmade(
        out("refuse-label-after-latent.onnx"),
        [helper.make_node("Gather", ["table", "label"], ["row"], name="embed", axis=0),
         helper.make_node("Concat", ["z", "row"], ["joined"], name="join", axis=1),
         helper.make_node("Gemm", ["joined", "w11", "b"], ["y"], name="fc", transB=1),
         helper.make_node("Tanh", ["y"], ["image"], name="tanh")],
        [helper.make_tensor_value_info("z", f32, [1, 8]),
         helper.make_tensor_value_info("label", i64, [1])],
        [helper.make_tensor_value_info("image", f32, [1, 16])],
        [numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), "table"),
         numpy_helper.from_array(rng.standard_normal((16, 11)).astype(np.float32), "w11"), b],
    )
    # Last, so that the fixtures above keep their random initialisations: the shipped
    # conditional generator as cgan.py exports it (inputs z and an int64 label).
    cgan = CganPyGenerator()
    load_shipped(cgan, "mnist-digits-conditional")
    export_conditional(cgan, 100, out("cgan-digits-opset17.onnx"), 17)
    record_conditional(out("cgan-digits-opset17.onnx"), 100, 10)
    write_conv_refusals(args.out)
    write_conv_fixtures(args.out)
    write_hostile(os.path.join(ROOT, "fuzz/corpus/onnx_import"))
    files = [os.path.join(d, f) for d, _, names in os.walk(args.out) for f in names]
    total = sum(os.path.getsize(f) for f in files)
    print(f"wrote {len(files)} files to {args.out}, {total:,} bytes")


if __name__ == "__main__":
    main()
