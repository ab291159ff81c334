//! Built-in models with seeded weights, so anyone can run the system with no download:
//! VGG-16 and VGG-19 (ImageNet shapes; any input size divisible by 32), a small VGG-style net
//! for 28×28 grayscale input, and a small residual net with batch normalization.
//!
//! Weights are He-uniform from a fixed ChaCha seed: activations keep a sensible scale through
//! depth, so calibration and quantization behave as on trained weights. They are not trained.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::ir::{Conv, Dense, Model, Node, NodeId, Op, Pool, ValueId, INPUT};

mod imagenet;
pub use imagenet::{densenet121, efficientnet_b0, mobilenetv2, resnet50, squeezenet11};

/// Fashion-MNIST class names (the labels of the small net).
pub const FASHION_LABELS: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Names accepted by `by_name`.
pub const NAMES: [&str; 10] = [
    "fashion",
    "small",
    "vgg16",
    "vgg19",
    "resnet-small",
    "resnet50",
    "mobilenetv2",
    "efficientnet-b0",
    "densenet121",
    "squeezenet1.1",
];

/// The ImageNet-shaped zoo models that take any input size (a multiple of 32): `NAME@N`.
fn sized(name: &str, hw: usize) -> Option<Model> {
    Some(match name {
        "vgg16" => vgg16(hw),
        "vgg19" => vgg19(hw),
        "resnet50" => resnet50(hw),
        "mobilenetv2" => mobilenetv2(hw),
        "efficientnet-b0" => efficientnet_b0(hw),
        "densenet121" => densenet121(hw),
        "squeezenet1.1" => squeezenet11(hw),
        _ => return None,
    })
}

/// The trained Fashion-MNIST classifier (the `small` architecture), as written by
/// `origami train` with its default settings (assets/fashion-small.onnx, 0.9 MB).
pub const FASHION_ONNX: &[u8] = include_bytes!("../assets/fashion-small.onnx");

/// The trained Fashion-MNIST classifier: `small`'s architecture, trained by `origami train`.
pub fn fashion() -> Model {
    // The bundled file is fixed at build time and its import is checked by a unit test.
    crate::onnx::from_bytes(FASHION_ONNX, None).expect("bundled fashion-small.onnx imports")
}

/// A zoo model by name: `fashion` (trained), `small`, `resnet-small`, and the ImageNet shapes
/// at 224×224 (`vgg16`, `vgg19`, `resnet50`, `mobilenetv2`, `efficientnet-b0`, `densenet121`,
/// `squeezenet1.1`; seeded, untrained).
pub fn by_name(name: &str) -> Option<Model> {
    match name {
        "fashion" => Some(fashion()),
        "small" => Some(small()),
        "resnet-small" => Some(resnet_small()),
        _ => sized(name, 224),
    }
}

struct Builder {
    nodes: Vec<Node>,
    rng: ChaCha8Rng,
}

impl Builder {
    fn new(seed: u64) -> Self {
        Self {
            nodes: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn uniform(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = (self.rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32; // [0, 1)
                (2.0 * u - 1.0) * a
            })
            .collect()
    }

    fn push(&mut self, name: impl Into<String>, op: Op, inputs: Vec<ValueId>) -> ValueId {
        let output = NodeId::new(self.nodes.len()).output();
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
            output,
        });
        output
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: ValueId,
        in_c: usize,
        out_c: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> ValueId {
        let fan_in = in_c / groups * k * k;
        let a = (6.0 / fan_in as f32).sqrt();
        let weight = self.uniform(out_c * fan_in, a);
        let bias = self.uniform(out_c, 0.05);
        self.push(
            name,
            Op::Conv(Conv {
                out_c,
                in_c,
                kh: k,
                kw: k,
                stride: [stride, stride],
                pads: [pad; 4],
                groups,
                weight,
                bias,
            }),
            vec![x],
        )
    }

    fn dense(&mut self, name: &str, x: ValueId, in_f: usize, out_f: usize, gain: f32) -> ValueId {
        let a = gain * (6.0 / in_f as f32).sqrt();
        let weight = self.uniform(out_f * in_f, a);
        let bias = self.uniform(out_f, 0.05);
        self.push(
            name,
            Op::Dense(Dense {
                out_f,
                in_f,
                weight,
                bias,
            }),
            vec![x],
        )
    }

    fn relu(&mut self, name: &str, x: ValueId) -> ValueId {
        self.push(name, Op::Relu, vec![x])
    }

    fn maxpool(&mut self, name: &str, x: ValueId) -> ValueId {
        self.push(
            name,
            Op::MaxPool(Pool {
                kernel: [2, 2],
                stride: [2, 2],
                pads: [0; 4],
                count_include_pad: false,
            }),
            vec![x],
        )
    }

    fn finish(self, name: &str, input_shape: Vec<usize>, labels: Option<Vec<String>>) -> Model {
        let output = ValueId::new(self.nodes.len());
        Model {
            name: name.into(),
            input_shape,
            nodes: self.nodes,
            output,
            labels,
        }
    }
}

/// VGG configuration: channels per conv, 0 = max-pool.
const VGG16: [usize; 18] = [
    64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
];
const VGG19: [usize; 21] = [
    64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0,
];

/// A VGG network on `hw × hw` RGB input (`hw` divisible by 32), 1000 classes, torchvision layout
/// (the classifier reads the 512 × (hw/32)² features directly: at 224 that is 25 088).
pub fn vgg(name: &str, cfg: &[usize], hw: usize, width_div: usize, seed: u64) -> Model {
    assert!(
        hw.is_multiple_of(32) && hw > 0,
        "VGG input size must be a multiple of 32"
    ); // zoo parameters are fixed in code
    let mut b = Builder::new(seed);
    let mut x = INPUT;
    let mut c = 3;
    let (mut block, mut idx) = (1, 1);
    for &v in cfg {
        if v == 0 {
            x = b.maxpool(&format!("pool{block}"), x);
            block += 1;
            idx = 1;
        } else {
            let out = (v / width_div).max(1);
            x = b.conv(&format!("conv{block}_{idx}"), x, c, out, 3, 1, 1, 1);
            x = b.relu(&format!("relu{block}_{idx}"), x);
            c = out;
            idx += 1;
        }
    }
    let side = hw / 32;
    x = b.push("flatten", Op::Flatten, vec![x]);
    let hidden = (4096 / width_div).max(1);
    x = b.dense("fc6", x, c * side * side, hidden, 1.0);
    x = b.relu("relu6", x);
    x = b.dense("fc7", x, hidden, hidden, 1.0);
    x = b.relu("relu7", x);
    let _ = b.dense("fc8", x, hidden, 1000, 1.0);
    b.finish(name, vec![3, hw, hw], None)
}

/// VGG-16 with seeded weights at `hw × hw` input (224 for ImageNet shapes).
pub fn vgg16(hw: usize) -> Model {
    vgg("vgg16", &VGG16, hw, 1, 16)
}

/// VGG-19 with seeded weights at `hw × hw` input.
pub fn vgg19(hw: usize) -> Model {
    vgg("vgg19", &VGG19, hw, 1, 19)
}

/// A small VGG-style classifier for 28×28 grayscale images (Fashion-MNIST shapes):
/// 2 blocks of 2 convolutions, then two dense layers. 10 classes (logits).
pub fn small() -> Model {
    let mut b = Builder::new(28);
    let mut x = INPUT;
    let mut c = 1;
    for (block, &ch) in [16usize, 32].iter().enumerate() {
        for i in 1..=2 {
            x = b.conv(&format!("conv{}_{i}", block + 1), x, c, ch, 3, 1, 1, 1);
            x = b.relu(&format!("relu{}_{i}", block + 1), x);
            c = ch;
        }
        x = b.maxpool(&format!("pool{}", block + 1), x);
    }
    x = b.push("flatten", Op::Flatten, vec![x]);
    x = b.dense("fc1", x, 32 * 7 * 7, 128, 1.0);
    x = b.relu("relu_fc1", x);
    let _ = b.dense("fc2", x, 128, 10, 1.0);
    b.finish(
        "small",
        vec![1, 28, 28],
        Some(FASHION_LABELS.iter().map(|s| s.to_string()).collect()),
    )
}

/// A small residual net (32×32 RGB): conv + batch norm + ReLU stem, two residual blocks (one
/// with a depthwise convolution and ReLU6), average and global pooling, dense head, softmax.
/// Exercises every operator the engine supports.
pub fn resnet_small() -> Model {
    let mut b = Builder::new(7);
    let mut x = b.conv("stem", INPUT, 3, 16, 3, 1, 1, 1);
    let scale = b.uniform(16, 0.2).iter().map(|v| 1.0 + v).collect();
    let shift = b.uniform(16, 0.1);
    x = b.push("stem_bn", Op::BatchNorm { scale, shift }, vec![x]);
    x = b.relu("stem_relu", x);
    // Block 1: conv-relu-conv + identity.
    let y = b.conv("b1_conv1", x, 16, 16, 3, 1, 1, 1);
    let y = b.relu("b1_relu1", y);
    let y = b.conv("b1_conv2", y, 16, 16, 3, 1, 1, 1);
    let s = b.push("b1_add", Op::Add, vec![x, y]);
    x = b.relu("b1_relu", s);
    x = b.push(
        "pool",
        Op::AvgPool(Pool {
            kernel: [3, 3],
            stride: [2, 2],
            pads: [1; 4],
            count_include_pad: false,
        }),
        vec![x],
    );
    // Block 2: depthwise (stride 1) + pointwise, ReLU6, + identity.
    let y = b.conv("b2_dw", x, 16, 16, 3, 1, 1, 16);
    let y = b.push("b2_relu6", Op::Clip { min: 0.0, max: 6.0 }, vec![y]);
    let y = b.conv("b2_pw", y, 16, 16, 1, 1, 0, 1);
    x = b.push("b2_add", Op::Add, vec![x, y]);
    x = b.conv("down", x, 16, 32, 3, 2, 1, 1);
    x = b.relu("down_relu", x);
    x = b.push("gap", Op::GlobalAvgPool, vec![x]);
    x = b.push("flatten", Op::Flatten, vec![x]);
    x = b.dense("fc", x, 32, 10, 1.0);
    let _ = b.push("softmax", Op::Softmax, vec![x]);
    b.finish("resnet-small", vec![3, 32, 32], None)
}

/// A seeded input tensor `[1, C, H, W]` with values roughly like a normalized image.
pub fn seeded_input(model: &Model, seed: u64) -> crate::Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = model.input_shape.iter().product();
    let data = (0..n)
        .map(|_| ((rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0)
        .collect();
    let mut shape = vec![1];
    shape.extend_from_slice(&model.input_shape);
    crate::Tensor { shape, data }
}

/// A model by its command-line spec: an ONNX file (a path ending in `.onnx`, or any existing
/// path), `NAME@N` for an ImageNet-shaped zoo model at input size N (a multiple of 32 up to
/// 1024, e.g. `vgg16@64`, `resnet50@96`), or a built-in name (`NAMES`).
pub fn load(spec: &str) -> Result<Model, crate::ModelError> {
    let p = std::path::Path::new(spec);
    if spec.ends_with(".onnx") || p.exists() {
        return crate::onnx::load(p);
    }
    let bad = |m: String| crate::ModelError::Input(m);
    if let Some((base, size)) = spec.split_once('@') {
        let n: usize = size
            .parse()
            .map_err(|_| bad(format!("bad size in '{spec}'")))?;
        if n == 0 || !n.is_multiple_of(32) || n > 1024 {
            return Err(bad(format!(
                "input size must be a multiple of 32 between 32 and 1024, got {n}"
            )));
        }
        return sized(base, n).ok_or_else(|| {
            bad(format!(
                "'{base}' takes no size (sized: vgg16, vgg19, resnet50, mobilenetv2, \
                 efficientnet-b0, densenet121, squeezenet1.1)"
            ))
        });
    }
    by_name(spec).ok_or_else(|| {
        bad(format!(
            "unknown model '{spec}' (built-in: {})",
            NAMES.join(", ")
        ))
    })
}

/// Calibration inputs for `model`: `n` seeded inputs, plus the bundled images when it takes
/// 28×28 inputs (`input::bundled_calibration`). The enclave and the host calibrate on exactly
/// these, so their plans agree.
pub fn calibration(model: &Model, n: usize) -> Vec<crate::Tensor> {
    let mut v: Vec<crate::Tensor> = (0..n as u64)
        .map(|s| seeded_input(model, 0xca11b + s))
        .collect();
    v.extend(crate::input::bundled_calibration(model));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoo_models_validate_with_expected_sizes() {
        let v = vgg16(224);
        v.validate().unwrap();
        assert_eq!(v.linear_nodes().len(), 16);
        // 15.47 GMAC (docs/PRIOR-ART.md).
        assert_eq!(v.macs().unwrap() / 10_000_000, 1547);
        let v19 = vgg19(224);
        assert_eq!(v19.linear_nodes().len(), 19);
        assert_eq!(v19.macs().unwrap() / 10_000_000, 1963);
        // --split 4 on VGG-16 ends after block 2's pooling: the tail starts at conv3_1.
        let k = v.split_node(4).unwrap();
        assert_eq!(v.nodes[k.index()].name, "conv3_1");
        assert_eq!(v.nodes[k.index() - 1].name, "pool2");
        small().validate().unwrap();
        resnet_small().validate().unwrap();
        let f = fashion();
        assert_eq!(f.name, "fashion-small");
        assert_eq!(f.labels.as_deref().map(|l| l.len()), Some(10));
        assert_eq!(f.linear_nodes().len(), small().linear_nodes().len());
        assert_eq!(vgg16(224).hash(), v.hash());
        assert_ne!(vgg16(32).hash(), v.hash());
    }
}
