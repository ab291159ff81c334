//! ImageNet-shaped architectures with seeded weights, in torchvision's layout: ResNet-50,
//! MobileNetV2, EfficientNet-B0, DenseNet-121 and SqueezeNet 1.1. They give benchmarks and tests
//! the branch structures users bring (residual sums, channel concatenation, depthwise
//! convolutions, squeeze-and-excitation) with no download. Every one takes any square input
//! whose side is a multiple of 32 (224 for ImageNet shapes) and ends in 1000 logits.
//!
//! Batch normalization stays a separate node (as exporters write it); the plan folds it into the
//! convolution before it where there is one. The last normalization of each residual branch is
//! scaled down (as "zero-init" training recipes start), so activations keep their scale through
//! depth with untrained weights.

use super::Builder;
use crate::ir::{Model, Op, Pool, ValueId, INPUT};
use crate::ops::{BinOp, Unary};

/// Activation after a normalized convolution.
#[derive(Clone, Copy, PartialEq)]
enum Act {
    None,
    Relu,
    Relu6,
    Silu,
}

impl Builder {
    /// Batch normalization with scale `gain·(1 ± 0.1)` and a small shift.
    fn bn(&mut self, name: &str, x: ValueId, c: usize, gain: f32) -> ValueId {
        let scale = self
            .uniform(c, 0.1)
            .iter()
            .map(|v| gain * (1.0 + v))
            .collect();
        let shift = self.uniform(c, 0.05);
        self.push(name, Op::BatchNorm { scale, shift }, vec![x])
    }

    fn act(&mut self, name: &str, x: ValueId, act: Act) -> ValueId {
        match act {
            Act::None => x,
            Act::Relu => self.relu(name, x),
            Act::Relu6 => self.push(name, Op::Clip { min: 0.0, max: 6.0 }, vec![x]),
            Act::Silu => {
                let s = self.push(
                    format!("{name}_sigmoid"),
                    Op::Unary(Unary::Sigmoid),
                    vec![x],
                );
                self.push(name, Op::Binary(BinOp::Mul), vec![x, s])
            }
        }
    }

    /// Convolution (padding `k/2`) → batch norm → activation.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        name: &str,
        x: ValueId,
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        groups: usize,
        act: Act,
        gain: f32,
    ) -> ValueId {
        let y = self.conv(name, x, in_c, out_c, k, stride, k / 2, groups);
        let y = self.bn(&format!("{name}_bn"), y, out_c, gain);
        self.act(&format!("{name}_act"), y, act)
    }

    fn pool(&mut self, name: &str, x: ValueId, max: bool, k: usize, s: usize, p: usize) -> ValueId {
        let pool = Pool {
            kernel: [k, k],
            stride: [s, s],
            pads: [p; 4],
            count_include_pad: false,
        };
        let op = if max {
            Op::MaxPool(pool)
        } else {
            Op::AvgPool(pool)
        };
        self.push(name, op, vec![x])
    }

    /// Global average pooling, flatten, dense classifier to 1000 logits.
    fn classifier(&mut self, x: ValueId, c: usize) -> ValueId {
        let x = self.push("gap", Op::GlobalAvgPool, vec![x]);
        let x = self.push("flatten", Op::Flatten, vec![x]);
        self.dense("fc", x, c, 1000, 1.0)
    }
}

fn check_side(hw: usize) {
    // Zoo parameters are fixed in code (`zoo::load` checks user sizes before calling).
    assert!(
        hw.is_multiple_of(32) && hw > 0,
        "input size must be a multiple of 32"
    );
}

/// Gain of the last normalization in a residual branch.
const BRANCH_GAIN: f32 = 0.25;
/// SiLU passes less of a unit Gaussian's second moment than ReLU's He scaling assumes (≈0.36
/// against 0.5): the normalization before it makes up the difference.
const SILU_GAIN: f32 = 1.2;
/// Squeeze-and-excitation gates start near sigmoid(0) = 0.5: the projection after a gate doubles.
const SE_GAIN: f32 = 2.0;

/// ResNet-50 (torchvision v1.5: the stride sits on the 3×3 convolution). 54 linear layers,
/// ≈ 4.1 GMAC at 224.
pub fn resnet50(hw: usize) -> Model {
    check_side(hw);
    let mut b = Builder::new(50);
    let mut x = b.conv_bn("conv1", INPUT, 3, 64, 7, 2, 1, Act::Relu, 1.0);
    x = b.pool("maxpool", x, true, 3, 2, 1);
    let mut c = 64;
    for (stage, (&width, &blocks)) in [64usize, 128, 256, 512]
        .iter()
        .zip(&[3usize, 4, 6, 3])
        .enumerate()
    {
        for blk in 0..blocks {
            let stride = if stage > 0 && blk == 0 { 2 } else { 1 };
            let p = format!("layer{}.{blk}", stage + 1);
            let out = width * 4;
            let y = b.conv_bn(&format!("{p}.conv1"), x, c, width, 1, 1, 1, Act::Relu, 1.0);
            let y = b.conv_bn(
                &format!("{p}.conv2"),
                y,
                width,
                width,
                3,
                stride,
                1,
                Act::Relu,
                1.0,
            );
            let y = b.conv_bn(
                &format!("{p}.conv3"),
                y,
                width,
                out,
                1,
                1,
                1,
                Act::None,
                BRANCH_GAIN,
            );
            let skip = if blk == 0 {
                b.conv_bn(
                    &format!("{p}.downsample"),
                    x,
                    c,
                    out,
                    1,
                    stride,
                    1,
                    Act::None,
                    1.0,
                )
            } else {
                x
            };
            let s = b.push(format!("{p}.add"), Op::Add, vec![skip, y]);
            x = b.relu(&format!("{p}.relu"), s);
            c = out;
        }
    }
    b.classifier(x, c);
    b.finish("resnet50", vec![3, hw, hw], None)
}

/// MobileNetV2 (width 1.0): inverted residuals with ReLU6 and linear bottlenecks. 53 linear
/// layers, ≈ 0.30 GMAC at 224.
pub fn mobilenetv2(hw: usize) -> Model {
    check_side(hw);
    // (expansion t, channels c, repeats n, first stride s), from the paper's Table 2.
    const CFG: [(usize, usize, usize, usize); 7] = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let mut b = Builder::new(2);
    let mut x = b.conv_bn("stem", INPUT, 3, 32, 3, 2, 1, Act::Relu6, 1.0);
    let mut c = 32;
    let mut i = 0;
    for &(t, out, n, s) in &CFG {
        for r in 0..n {
            let stride = if r == 0 { s } else { 1 };
            let p = format!("block{i}");
            let hidden = c * t;
            let mut y = x;
            if t != 1 {
                y = b.conv_bn(
                    &format!("{p}.expand"),
                    y,
                    c,
                    hidden,
                    1,
                    1,
                    1,
                    Act::Relu6,
                    1.0,
                );
            }
            y = b.conv_bn(
                &format!("{p}.dw"),
                y,
                hidden,
                hidden,
                3,
                stride,
                hidden,
                Act::Relu6,
                1.0,
            );
            let residual = stride == 1 && c == out;
            let gain = if residual { BRANCH_GAIN } else { 1.0 };
            y = b.conv_bn(
                &format!("{p}.project"),
                y,
                hidden,
                out,
                1,
                1,
                1,
                Act::None,
                gain,
            );
            x = if residual {
                b.push(format!("{p}.add"), Op::Add, vec![x, y])
            } else {
                y
            };
            c = out;
            i += 1;
        }
    }
    x = b.conv_bn("head", x, c, 1280, 1, 1, 1, Act::Relu6, 1.0);
    b.classifier(x, 1280);
    b.finish("mobilenetv2", vec![3, hw, hw], None)
}

/// EfficientNet-B0: MBConv blocks with SiLU (`x · sigmoid(x)`) and squeeze-and-excitation
/// (global pool → 1×1 reduce → SiLU → 1×1 expand → sigmoid → per-channel `Mul`). 82 linear
/// layers, ≈ 0.39 GMAC at 224.
pub fn efficientnet_b0(hw: usize) -> Model {
    check_side(hw);
    // (expansion, kernel, first stride, channels, repeats).
    const CFG: [(usize, usize, usize, usize, usize); 7] = [
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 5, 2, 40, 2),
        (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3),
        (6, 5, 2, 192, 4),
        (6, 3, 1, 320, 1),
    ];
    let mut b = Builder::new(0xb0);
    let mut x = b.conv_bn("stem", INPUT, 3, 32, 3, 2, 1, Act::Silu, SILU_GAIN);
    let mut c = 32;
    let mut i = 0;
    for &(e, k, s, out, n) in &CFG {
        for r in 0..n {
            let stride = if r == 0 { s } else { 1 };
            let p = format!("block{i}");
            let hidden = c * e;
            let mut y = x;
            if e != 1 {
                y = b.conv_bn(
                    &format!("{p}.expand"),
                    y,
                    c,
                    hidden,
                    1,
                    1,
                    1,
                    Act::Silu,
                    1.0,
                );
            }
            y = b.conv_bn(
                &format!("{p}.dw"),
                y,
                hidden,
                hidden,
                k,
                stride,
                hidden,
                Act::Silu,
                1.0,
            );
            // Squeeze and excitation, reducing to a quarter of the block's input channels.
            let squeezed = (c / 4).max(1);
            let g = b.push(format!("{p}.se.pool"), Op::GlobalAvgPool, vec![y]);
            let g = b.conv(&format!("{p}.se.reduce"), g, hidden, squeezed, 1, 1, 0, 1);
            let g = b.act(&format!("{p}.se.act"), g, Act::Silu);
            let g = b.conv(&format!("{p}.se.expand"), g, squeezed, hidden, 1, 1, 0, 1);
            let g = b.push(format!("{p}.se.gate"), Op::Unary(Unary::Sigmoid), vec![g]);
            y = b.push(format!("{p}.se.scale"), Op::Binary(BinOp::Mul), vec![y, g]);
            let residual = stride == 1 && c == out;
            let gain = if residual { BRANCH_GAIN } else { SE_GAIN };
            y = b.conv_bn(
                &format!("{p}.project"),
                y,
                hidden,
                out,
                1,
                1,
                1,
                Act::None,
                gain,
            );
            x = if residual {
                b.push(format!("{p}.add"), Op::Add, vec![x, y])
            } else {
                y
            };
            c = out;
            i += 1;
        }
    }
    x = b.conv_bn("head", x, c, 1280, 1, 1, 1, Act::Silu, SILU_GAIN);
    b.classifier(x, 1280);
    b.finish("efficientnet-b0", vec![3, hw, hw], None)
}

/// DenseNet-121 (growth 32, bottleneck 4·growth, compression 0.5): pre-activation dense layers
/// (BN → ReLU → 1×1 → BN → ReLU → 3×3) concatenated onto the block's features. 121 linear layers,
/// ≈ 2.87 GMAC at 224.
pub fn densenet121(hw: usize) -> Model {
    check_side(hw);
    const GROWTH: usize = 32;
    let mut b = Builder::new(121);
    let mut x = b.conv_bn("conv0", INPUT, 3, 64, 7, 2, 1, Act::Relu, 1.0);
    x = b.pool("pool0", x, true, 3, 2, 1);
    let mut c = 64;
    for (blk, &layers) in [6usize, 12, 24, 16].iter().enumerate() {
        for l in 0..layers {
            let p = format!("denseblock{}.layer{}", blk + 1, l + 1);
            let y = b.bn(&format!("{p}.norm1"), x, c, 1.0);
            let y = b.relu(&format!("{p}.relu1"), y);
            let y = b.conv(&format!("{p}.conv1"), y, c, 4 * GROWTH, 1, 1, 0, 1);
            let y = b.bn(&format!("{p}.norm2"), y, 4 * GROWTH, 1.0);
            let y = b.relu(&format!("{p}.relu2"), y);
            let y = b.conv(&format!("{p}.conv2"), y, 4 * GROWTH, GROWTH, 3, 1, 1, 1);
            x = b.push(format!("{p}.concat"), Op::Concat { axis: 1 }, vec![x, y]);
            c += GROWTH;
        }
        if blk < 3 {
            let p = format!("transition{}", blk + 1);
            let y = b.bn(&format!("{p}.norm"), x, c, 1.0);
            let y = b.relu(&format!("{p}.relu"), y);
            let y = b.conv(&format!("{p}.conv"), y, c, c / 2, 1, 1, 0, 1);
            x = b.pool(&format!("{p}.pool"), y, false, 2, 2, 0);
            c /= 2;
        }
    }
    x = b.bn("norm5", x, c, 1.0);
    x = b.relu("relu5", x);
    b.classifier(x, c);
    b.finish("densenet121", vec![3, hw, hw], None)
}

/// SqueezeNet 1.1: fire modules (1×1 squeeze, then 1×1 and 3×3 expands concatenated) and a
/// convolutional classifier. 26 linear layers, ≈ 0.35 GMAC at 224. torchvision pools with
/// `ceil_mode`; at 224 the floor and ceiling sizes agree (111 → 55 → 27 → 13).
pub fn squeezenet11(hw: usize) -> Model {
    check_side(hw);
    let mut b = Builder::new(11);
    let mut x = b.conv("conv1", INPUT, 3, 64, 3, 2, 0, 1);
    x = b.relu("relu1", x);
    let mut c = 64;
    // (squeeze, expand per branch); a max pool after the modules marked true.
    let fires: [(usize, usize, bool); 8] = [
        (16, 64, false),
        (16, 64, true),
        (32, 128, false),
        (32, 128, true),
        (48, 192, false),
        (48, 192, false),
        (64, 256, false),
        (64, 256, false),
    ];
    x = b.pool("pool1", x, true, 3, 2, 0);
    for (i, &(sq, ex, pool_after)) in fires.iter().enumerate() {
        let p = format!("fire{}", i + 2);
        let s = b.conv(&format!("{p}.squeeze"), x, c, sq, 1, 1, 0, 1);
        let s = b.relu(&format!("{p}.squeeze_relu"), s);
        let e1 = b.conv(&format!("{p}.expand1x1"), s, sq, ex, 1, 1, 0, 1);
        let e1 = b.relu(&format!("{p}.expand1x1_relu"), e1);
        let e3 = b.conv(&format!("{p}.expand3x3"), s, sq, ex, 3, 1, 1, 1);
        let e3 = b.relu(&format!("{p}.expand3x3_relu"), e3);
        x = b.push(format!("{p}.concat"), Op::Concat { axis: 1 }, vec![e1, e3]);
        c = 2 * ex;
        if pool_after {
            x = b.pool(&format!("pool{}", i + 2), x, true, 3, 2, 0);
        }
    }
    x = b.conv("classifier.conv", x, c, 1000, 1, 1, 0, 1);
    x = b.relu("classifier.relu", x);
    x = b.push("gap", Op::GlobalAvgPool, vec![x]);
    b.push("flatten", Op::Flatten, vec![x]);
    b.finish("squeezenet1.1", vec![3, hw, hw], None)
}
