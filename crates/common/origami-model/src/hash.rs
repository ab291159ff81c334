//! `Model::hash`: the identity that pads and attestation bind to.

use sha2::{Digest, Sha256};

use crate::ir::{Model, Op, PadMode};

impl Model {
    /// SHA-256 over a canonical encoding of the whole model (structure and weights): the identity
    /// that pads and attestation bind to.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"origami-model-v1");
        let put = |h: &mut Sha256, v: usize| h.update((v as u64).to_le_bytes());
        let putf = |h: &mut Sha256, v: &[f32]| {
            put(h, v.len());
            for x in v {
                h.update(x.to_le_bytes());
            }
        };
        put(&mut h, self.input_shape.len());
        for &d in &self.input_shape {
            put(&mut h, d);
        }
        put(&mut h, self.nodes.len());
        for n in &self.nodes {
            h.update(n.op.kind().as_bytes());
            put(&mut h, n.inputs.len());
            for &i in &n.inputs {
                put(&mut h, i.index());
            }
            match &n.op {
                Op::Conv(c) => {
                    for v in [c.out_c, c.in_c, c.kh, c.kw, c.groups] {
                        put(&mut h, v);
                    }
                    for v in c.stride.iter().chain(&c.pads) {
                        put(&mut h, *v);
                    }
                    putf(&mut h, &c.weight);
                    putf(&mut h, &c.bias);
                }
                Op::Dense(d) => {
                    put(&mut h, d.out_f);
                    put(&mut h, d.in_f);
                    putf(&mut h, &d.weight);
                    putf(&mut h, &d.bias);
                }
                Op::Clip { min, max } => putf(&mut h, &[*min, *max]),
                Op::MaxPool(p) | Op::AvgPool(p) => {
                    for v in p.kernel.iter().chain(&p.stride).chain(&p.pads) {
                        put(&mut h, *v);
                    }
                    put(&mut h, p.count_include_pad as usize);
                }
                Op::BatchNorm { scale, shift } => {
                    putf(&mut h, scale);
                    putf(&mut h, shift);
                }
                Op::Reshape(d) => {
                    put(&mut h, d.len());
                    for &x in d {
                        put(&mut h, x);
                    }
                }
                Op::Unary(u) => putf(&mut h, &u.params()),
                Op::PRelu { slope } => putf(&mut h, slope),
                Op::BinaryConst { c, c_first, .. } => {
                    put(&mut h, *c_first as usize);
                    put(&mut h, c.shape.len());
                    for &d in &c.shape {
                        put(&mut h, d);
                    }
                    putf(&mut h, &c.data);
                }
                Op::Concat { axis } => put(&mut h, *axis),
                Op::Transpose(perm) => {
                    put(&mut h, perm.len());
                    for &p in perm {
                        put(&mut h, p);
                    }
                }
                Op::Lrn(l) => {
                    put(&mut h, l.size);
                    putf(&mut h, &[l.alpha, l.beta, l.bias]);
                }
                Op::Pad { pads, mode } => {
                    for &p in pads {
                        put(&mut h, p);
                    }
                    match mode {
                        PadMode::Constant(v) => {
                            put(&mut h, 0);
                            putf(&mut h, &[*v]);
                        }
                        PadMode::Reflect => put(&mut h, 1),
                        PadMode::Edge => put(&mut h, 2),
                    }
                }
                Op::Dilate { stride, pads } => {
                    for &v in stride.iter().chain(pads) {
                        put(&mut h, v);
                    }
                }
                // The operator name (hashed above) says everything.
                Op::Relu
                | Op::GlobalAvgPool
                | Op::Flatten
                | Op::Add
                | Op::Softmax
                | Op::LogSoftmax
                | Op::Binary(_)
                | Op::GlobalMaxPool => {}
            }
        }
        put(&mut h, self.output.index());
        h.finalize().into()
    }
}
