#!/usr/bin/env python3
"""Damaged and hostile ONNX files: each made tract-onnx panic, abort or read past the ONNX
specification before mcugan checked for it. They are seeds of the ONNX fuzz target's corpus
(fuzz/corpus/onnx_import) and the stable tests run mcugan on each (a named refusal, never a
panic or a signal). Called by bench/onnx_fixtures.py; not used by CI.
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_hostile(out):
    """Writes the hostile files into the folder `out`."""
    os.makedirs(out, exist_ok=True)
    f32 = TensorProto.FLOAT
    rng = np.random.default_rng(0)

    def init(name, array):
        return numpy_helper.from_array(np.asarray(array), name)

    weights = [init("w", rng.standard_normal((16, 8)).astype(np.float32)),
               init("b", rng.standard_normal(16).astype(np.float32))]
    latent = [helper.make_tensor_value_info("z", f32, [1, 8])]
    image = [helper.make_tensor_value_info("image", f32, [1, 16])]

    def save(name, nodes, extra=(), outputs=image, opset=13, ir=8):
        graph = helper.make_graph(nodes, name, latent, outputs, weights + list(extra))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = ir
        onnx.save(model, os.path.join(out, name + ".onnx"))

    gemm = helper.make_node("Gemm", ["z", "w", "b"], ["h"], name="fc", transB=1)
    tanh = helper.make_node("Tanh", ["h"], ["image"], name="tanh")
    ones = [init(n, np.ones(16, np.float32)) for n in ["s", "bb", "m", "v"]]
    # tract aborts (a stack overflow in a release build) analysing it.
    save("crash-batchnorm-of-a-1d-constant",
         [gemm, helper.make_node("BatchNormalization", ["c1d", "s", "bb", "m", "v"], ["bn"],
                                 name="bn_const"),
          helper.make_node("Add", ["h", "bn"], ["h2"], name="add"),
          helper.make_node("Tanh", ["h2"], ["image"], name="tanh")],
         [init("c1d", np.ones(16, np.float32))] + ones)
    # tract panics in its model loader, its shape inference, its Gather.
    save("panic-output-of-no-node", [gemm, tanh],
         outputs=[helper.make_tensor_value_info("ghost", f32, [1, 16])])
    save("panic-string-initializer", [gemm, tanh],
         [helper.make_tensor("strs", TensorProto.STRING, [2], [b"a", b"b"])])
    save("panic-unsqueeze-axis-2-31",
         [gemm, helper.make_node("Unsqueeze", ["h", "ax"], ["u"], name="unsq"),
          helper.make_node("Tanh", ["u"], ["image"], name="tanh")],
         [init("ax", np.array([2 ** 31], np.int64))])
    save("panic-flatten-axis-2-31",
         [gemm, helper.make_node("Flatten", ["h"], ["u"], name="flat", axis=2 ** 31 - 1),
          helper.make_node("Tanh", ["u"], ["image"], name="tanh")])
    save("panic-shape-of-a-scalar",
         [gemm, helper.make_node("Shape", ["sc"], ["shp"], name="shape"),
          helper.make_node("Gather", ["shp", "i0"], ["g"], name="gather", axis=0),
          helper.make_node("Reshape", ["h", "g"], ["r"], name="reshape"),
          helper.make_node("Tanh", ["r"], ["image"], name="tanh")],
         [init("sc", np.array(1.0, np.float32)), init("i0", np.array(0, np.int64))])
    # Outside the specification, yet read by tract without a word.
    save("spec-opset-99", [gemm, tanh], opset=99)
    save("spec-opset-minus-1", [gemm, tanh], opset=-1)
    save("spec-ir-version-0", [gemm, tanh], ir=0)
    save("spec-duplicate-node-output",
         [gemm, helper.make_node("Gemm", ["z", "w", "b"], ["h"], name="fc_again", transB=1),
          tanh])
    graph = helper.make_graph([gemm, tanh], "no-opset", latent, image, weights)
    model = helper.make_model(graph)
    del model.opset_import[:]
    model.ir_version = 8
    onnx.save(model, os.path.join(out, "spec-no-opset-import.onnx"))
    # A declaration of 2 GiB of external weights in a file that holds 8 bytes, and a hidden
    # layer 5,000 wide (probing it would take memory in its square): both refused before any
    # weight is read or probed.
    big = TensorProto()
    big.name = "w_big"
    big.data_type = f32
    big.dims.extend([16, 1 << 25])
    big.data_location = TensorProto.EXTERNAL
    for key, value in [("location", "huge.onnx.data"), ("offset", "0"),
                       ("length", str(16 * (1 << 25) * 4))]:
        entry = big.external_data.add()
        entry.key, entry.value = key, value
    with open(os.path.join(out, "huge.onnx.data"), "wb") as f:
        f.write(b"\0" * 8)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["z", "w_big", "b"], ["h"], name="fc_huge", transB=1), tanh],
        "external-2gib", latent, image, weights + [big])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, os.path.join(out, "memory-external-2gib.onnx"))
    wide = 5_000
    w1 = init("w1", rng.standard_normal((wide, 8)).astype(np.float32) * 0.01)
    w2 = init("w2", rng.standard_normal((16, wide)).astype(np.float32) * 0.01)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["z", "w1"], ["h"], name="wide", transB=1),
         helper.make_node("LeakyRelu", ["h"], ["a"], name="act", alpha=0.2),
         helper.make_node("Gemm", ["a", "w2"], ["o"], name="narrow", transB=1),
         helper.make_node("Tanh", ["o"], ["image"], name="tanh")],
        "wide-5000", latent, image, [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, os.path.join(out, "memory-hidden-5000-wide.onnx"))
