"""The nine classic ImageNet architectures of the public ONNX model zoo's caffe/caffe2-era files
(AlexNet, ZFNet-512, GoogLeNet, Inception v2, ResNet-50, DenseNet-121, SqueezeNet, ShuffleNet v1,
VGG-19), written the way those files are: IR version 3, opset 7-9, every initializer also listed
as a graph input, BatchNormalization with `spatial`, ceil-mode pooling spelled as asymmetric
pads, `Sum` for residual joins, `Reshape` to a literal [1, -1], `Dropout` and a final `Softmax`,
ShuffleNet's channel shuffle as Reshape → Transpose → Reshape, DenseNet's normalization as
`Unsqueeze`d constants multiplied and added. The zoo's own files cannot be downloaded here (only
package registries are reachable) and carry constant-filled weights anyway; these carry seeded
random ones (He-scaled, so activations keep their scale) and are written with `onnx.helper`, not
by Origami's exporter.

    python make_zoo9.py OUT_DIR [NAME...]

writes OUT_DIR/NAME.onnx for each architecture (all nine by default). Layer configurations follow
the papers and the caffe model definitions; where the zoo file's exact spelling is not known here
(ZFNet-512's classifier width, where the DenseNet file uses Unsqueeze) the choice is the closest
common form, so treat this as "an ImageNet network of that family from an old exporter", not a
byte-for-byte copy of the zoo file.
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class G:
    def __init__(self, name, seed, opset):
        self.name, self.opset, self.nodes, self.inits, self.k = name, opset, [], [], 0
        self.rng = np.random.default_rng(seed)

    def fresh(self, p):
        self.k += 1
        return f"{p}_{self.k}"

    def const(self, p, a, dtype=np.float32):
        name = self.fresh(p)
        self.inits.append(numpy_helper.from_array(np.asarray(a, dtype=dtype), name))
        return name

    def node(self, op, ins, p=None, **attrs):
        out = self.fresh(p or op.lower())
        self.nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k, s=1, p=0, g=1, bias=True):
        fan_in = cin // g * k * k
        wt = self.const("w", self.rng.standard_normal((cout, cin // g, k, k)) * np.sqrt(2.0 / fan_in))
        ins = [x, wt] + ([self.const("b", self.rng.standard_normal(cout) * 0.02)] if bias else [])
        return self.node("Conv", ins, "conv", kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, group=g)

    def bn(self, x, c, gain=1.0):
        r = self.rng
        ins = [x, self.const("s", gain * r.uniform(0.8, 1.2, c)), self.const("bb", r.standard_normal(c) * 0.05),
               self.const("m", r.standard_normal(c) * 0.05), self.const("v", r.uniform(0.8, 1.2, c))]
        spatial = {"spatial": 1} if self.opset < 9 else {}  # the attribute went away in opset 9
        return self.node("BatchNormalization", ins, "bn", epsilon=1e-5, **spatial)

    def relu(self, x):
        return self.node("Relu", [x])

    def cbr(self, x, cin, cout, k, s=1, p=None, g=1, relu=True, gain=1.0):
        y = self.bn(self.conv(x, cin, cout, k, s, k // 2 if p is None else p, g, bias=False), cout, gain)
        return self.relu(y) if relu else y

    def lrn(self, x):
        return self.node("LRN", [x], size=5, alpha=1e-4, beta=0.75, bias=1.0)

    def pool(self, x, k, s, pads=(0, 0, 0, 0), kind="MaxPool"):
        return self.node(kind, [x], kernel_shape=[k, k], strides=[s, s], pads=list(pads))

    def ceil_pool(self, x, k=3, s=2):
        """Caffe's ceil-mode pooling as the caffe2 converters wrote it: one extra pad at the end."""
        return self.pool(x, k, s, (0, 0, 1, 1))

    def fc(self, x, fin, fout, gain=1.0):
        wt = self.const("w", self.rng.standard_normal((fout, fin)) * gain * np.sqrt(2.0 / fin))
        return self.node("Gemm", [x, wt, self.const("b", self.rng.standard_normal(fout) * 0.02)], "fc", transB=1)

    def flat(self, x):
        return self.node("Reshape", [x, self.const("shape", [1, -1], np.int64)])

    def classifier(self, x, fins, dropout=True):
        """Reshape → (Gemm → Relu → Dropout)* → Gemm → Softmax."""
        x = self.flat(x)
        for fin, fout in zip(fins, fins[1:]):
            x = self.fc(x, fin, fout)
            if fout != 1000:
                x = self.relu(x)
                if dropout:
                    x = self.node("Dropout", [x], ratio=0.5)
        return x

    def finish(self, x):
        self.nodes.append(helper.make_node("Softmax", [x], ["prob"], name="prob", axis=1))
        inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 224, 224])
        out = helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1000])
        # IR 3: every initializer is also a graph input.
        listed = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.inits]
        g = helper.make_graph(self.nodes, self.name, [inp] + listed, [out], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)], ir_version=3,
                              producer_name="onnx-caffe2")
        return m


def alexnet():
    g = G("bvlc_alexnet", 1, opset=9)
    x = g.ceil_pool(g.lrn(g.relu(g.conv("data", 3, 96, 11, 4))))           # 54 → 27
    x = g.ceil_pool(g.lrn(g.relu(g.conv(x, 96, 256, 5, 1, 2, g=2))))        # 27 → 13
    x = g.relu(g.conv(x, 256, 384, 3, 1, 1))
    x = g.relu(g.conv(x, 384, 384, 3, 1, 1, g=2))
    x = g.ceil_pool(g.relu(g.conv(x, 384, 256, 3, 1, 1, g=2)))              # 13 → 6
    return g.finish(g.classifier(x, [9216, 4096, 4096, 1000]))


def zfnet512():
    g = G("zfnet512", 2, opset=9)
    x = g.ceil_pool(g.lrn(g.relu(g.conv("data", 3, 96, 7, 2, 1))))         # 110 → 55
    x = g.ceil_pool(g.lrn(g.relu(g.conv(x, 96, 256, 5, 2))))                # 26 → 13
    x = g.relu(g.conv(x, 256, 384, 3, 1, 1))
    x = g.relu(g.conv(x, 384, 384, 3, 1, 1))
    x = g.ceil_pool(g.relu(g.conv(x, 384, 256, 3, 1, 1)))                   # 13 → 6
    return g.finish(g.classifier(x, [9216, 4096, 4096, 1000]))


def googlenet():
    g = G("bvlc_googlenet", 3, opset=8)
    x = g.ceil_pool(g.relu(g.conv("data", 3, 64, 7, 2, 3)))                # 112 → 56
    x = g.lrn(x)
    x = g.relu(g.conv(x, 64, 64, 1))
    x = g.ceil_pool(g.lrn(g.relu(g.conv(x, 64, 192, 3, 1, 1))))             # 56 → 28
    cfg = {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64), "pool3": None,
           "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
           "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
           "4e": (256, 160, 320, 32, 128, 128), "pool4": None,
           "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128)}
    c = 192
    for v in cfg.values():
        if v is None:
            x = g.ceil_pool(x)
            continue
        b1, r3, b3, r5, b5, pp = v
        a = g.relu(g.conv(x, c, b1, 1))
        b = g.relu(g.conv(g.relu(g.conv(x, c, r3, 1)), r3, b3, 3, 1, 1))
        d = g.relu(g.conv(g.relu(g.conv(x, c, r5, 1)), r5, b5, 5, 1, 2))
        e = g.relu(g.conv(g.pool(x, 3, 1, (1, 1, 1, 1)), c, pp, 1))
        x = g.node("Concat", [a, b, d, e], axis=1)
        c = b1 + b3 + b5 + pp
    x = g.node("Dropout", [g.pool(x, 7, 1, kind="AveragePool")], ratio=0.4)
    return g.finish(g.classifier(x, [1024, 1000]))


def inception_v2():
    g = G("inception_v2", 4, opset=8)
    x = g.ceil_pool(g.cbr("data", 3, 64, 7, 2))                             # 112 → 56
    x = g.cbr(x, 64, 64, 1)
    x = g.ceil_pool(g.cbr(x, 64, 192, 3))                                   # 56 → 28
    # (1x1, 3x3 reduce, 3x3, double-3x3 reduce, double 3x3, pool, projection); 0 = no branch,
    # stride-2 modules pass the max-pooled input through.
    cfg = [(64, 64, 64, 64, 96, "avg", 32), (64, 64, 96, 64, 96, "avg", 64), (0, 128, 160, 64, 96, "s2", 0),
           (224, 64, 96, 96, 128, "avg", 128), (192, 96, 128, 96, 128, "avg", 128),
           (160, 128, 160, 128, 160, "avg", 128), (96, 128, 192, 160, 192, "avg", 128),
           (0, 128, 192, 192, 256, "s2", 0), (352, 192, 320, 160, 224, "avg", 128),
           (352, 192, 320, 192, 224, "max", 128)]
    c = 192
    for b1, r3, b3, rd, bd, pool, pp in cfg:
        s = 2 if pool == "s2" else 1
        outs = []
        if b1:
            outs.append(g.cbr(x, c, b1, 1))
        outs.append(g.cbr(g.cbr(x, c, r3, 1), r3, b3, 3, s))
        outs.append(g.cbr(g.cbr(g.cbr(x, c, rd, 1), rd, bd, 3), bd, bd, 3, s))
        if pool == "s2":
            outs.append(g.ceil_pool(x))
            c_pool = c
        else:
            p = g.pool(x, 3, 1, (1, 1, 1, 1), "AveragePool" if pool == "avg" else "MaxPool")
            outs.append(g.cbr(p, c, pp, 1))
            c_pool = pp
        x = g.node("Concat", outs, axis=1)
        c = b1 + b3 + bd + c_pool
    x = g.pool(x, 7, 1, kind="AveragePool")
    return g.finish(g.classifier(x, [1024, 1000]))


def resnet50():
    g = G("resnet50", 5, opset=7)
    x = g.pool(g.cbr("data", 3, 64, 7, 2), 3, 2, (1, 1, 1, 1))
    c = 64
    for stage, (width, blocks) in enumerate(zip([64, 128, 256, 512], [3, 4, 6, 3])):
        for i in range(blocks):
            s = 2 if stage > 0 and i == 0 else 1
            y = g.cbr(x, c, width, 1, s)          # v1: the stride on the first 1x1
            y = g.cbr(y, width, width, 3)
            y = g.cbr(y, width, 4 * width, 1, relu=False, gain=0.25)
            skip = g.cbr(x, c, 4 * width, 1, s, relu=False) if i == 0 else x
            x = g.relu(g.node("Sum", [skip, y]))
            c = 4 * width
    x = g.pool(x, 7, 1, kind="AveragePool")
    return g.finish(g.classifier(x, [2048, 1000]))


def densenet121():
    g = G("densenet121", 6, opset=9)

    def norm(x, c):
        """Pre-activation normalization as Unsqueeze(scale) · x + Unsqueeze(shift)."""
        axes = dict(axes=[1, 2])
        sc = g.node("Unsqueeze", [g.const("scale", g.rng.uniform(0.8, 1.2, c))], **axes)
        sh = g.node("Unsqueeze", [g.const("shift", g.rng.standard_normal(c) * 0.05)], **axes)
        return g.relu(g.node("Add", [g.node("Mul", [x, sc]), sh]))

    x = g.pool(g.cbr("data", 3, 64, 7, 2), 3, 2, (1, 1, 1, 1))
    c = 64
    for blk, layers in enumerate([6, 12, 24, 16]):
        for _ in range(layers):
            y = g.conv(norm(x, c), c, 128, 1, bias=False)
            y = g.conv(norm(y, 128), 128, 32, 3, 1, 1, bias=False)
            x = g.node("Concat", [x, y], axis=1)
            c += 32
        if blk < 3:
            x = g.pool(g.conv(norm(x, c), c, c // 2, 1, bias=False), 2, 2, kind="AveragePool")
            c //= 2
    x = g.node("GlobalAveragePool", [norm(x, c)])
    x = g.conv(x, c, 1000, 1)                # the classifier as a 1x1 convolution
    return g.finish(g.flat(x))


def squeezenet():
    g = G("squeezenet", 7, opset=9)
    x = g.ceil_pool(g.relu(g.conv("data", 3, 96, 7, 2)))                   # 109 → 54
    c = 96
    for i, (sq, ex) in enumerate([(16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192),
                                  (64, 256), (64, 256)]):
        s = g.relu(g.conv(x, c, sq, 1))
        x = g.node("Concat", [g.relu(g.conv(s, sq, ex, 1)), g.relu(g.conv(s, sq, ex, 3, 1, 1))], axis=1)
        c = 2 * ex
        if i in (2, 6):
            x = g.ceil_pool(x)
    x = g.relu(g.conv(g.node("Dropout", [x], ratio=0.5), c, 1000, 1))
    return g.finish(g.flat(g.node("GlobalAveragePool", [x])))


def shufflenet():
    g = G("shufflenet", 8, opset=9)
    groups = 3
    x = g.pool(g.cbr("data", 3, 24, 3, 2), 3, 2, (1, 1, 1, 1))             # 112 → 56
    c, side = 24, 56
    for out, units in zip([240, 480, 960], [4, 8, 4]):
        for i in range(units):
            s = 2 if i == 0 else 1
            mid = out // 4
            first = c == 24
            y = g.cbr(x, c, mid, 1, g=1 if first else groups)
            # Channel shuffle: [1, g, mid/g, h, w] → swap → [1, mid, h, w].
            y = g.node("Reshape", [y, g.const("shape", [1, groups, mid // groups, side, side], np.int64)])
            y = g.node("Transpose", [y], perm=[0, 2, 1, 3, 4])
            y = g.node("Reshape", [y, g.const("shape", [1, mid, side, side], np.int64)])
            side //= s
            y = g.cbr(y, mid, mid, 3, s, g=mid, relu=False)
            branch = out - c if s == 2 else out
            y = g.cbr(y, mid, branch, 1, g=groups, relu=False, gain=0.25 if s == 1 else 1.0)
            if s == 2:
                x = g.relu(g.node("Concat", [g.pool(x, 3, 2, (1, 1, 1, 1), "AveragePool"), y], axis=1))
            else:
                x = g.relu(g.node("Add", [x, y]))
            c = out
    x = g.node("GlobalAveragePool", [x])
    return g.finish(g.classifier(x, [960, 1000]))


def vgg19():
    g = G("vgg19", 9, opset=9)
    x, c = "data", 3
    for v in [64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0]:
        if v == 0:
            x = g.pool(x, 2, 2)
        else:
            x, c = g.relu(g.conv(x, c, v, 3, 1, 1)), v
    return g.finish(g.classifier(x, [25088, 4096, 4096, 1000]))


ARCHS = {"alexnet": alexnet, "zfnet512": zfnet512, "googlenet": googlenet, "inception_v2": inception_v2,
         "resnet50": resnet50, "densenet121": densenet121, "squeezenet": squeezenet,
         "shufflenet": shufflenet, "vgg19": vgg19}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name in sys.argv[2:] or ARCHS:
        m = ARCHS[name]()
        onnx.checker.check_model(m)
        onnx.save(m, os.path.join(out, name + ".onnx"))
        print(f"wrote {name}.onnx", flush=True)


if __name__ == "__main__":
    main()
