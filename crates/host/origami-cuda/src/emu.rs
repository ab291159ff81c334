//! CPU emulation of `kernels.cu`: the unit tests compile the very source NVRTC compiles with the
//! host C++ compiler (behind `emu_shim.h`: one block of one thread, so each grid-stride loop runs
//! serially) and call the kernels on host buffers. This checks the index arithmetic, the limb
//! split and the reduction of the real kernel code on a machine with no GPU; only cuBLAS and the
//! launch itself are left to the GPU run. Skips with a message when no C++ compiler is found.

use std::path::PathBuf;
use std::process::Command;

use libloading::{Library, Symbol};
use origami_accel::conformance::{reference, Lcg};
use origami_accel::LinearShape;
use origami_model::linalg::{im2col, ConvGeom};
use origami_model::{exec, zoo, Conv, Node, Op, Pool, Tensor};

use crate::device::kernel_source;
use crate::limbs::*;

/// Extra elements after every output buffer, filled with a pattern that must survive.
const CANARY: usize = 64;

struct Emu {
    lib: Library,
    _dir: PathBuf,
}

fn compiler() -> Option<String> {
    let candidates = [
        std::env::var("CXX").ok(),
        Some("c++".into()),
        Some("g++".into()),
    ];
    candidates.into_iter().flatten().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn build() -> Option<Emu> {
    let Some(cxx) = compiler() else {
        println!("skipped: no C++ compiler (c++/g++/$CXX) to emulate the CUDA kernels");
        return None;
    };
    let dir = std::env::temp_dir().join(format!(
        "origami-cuda-emu-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let shim = dir.join("emu_shim.h");
    let src = dir.join("kernels.cpp");
    let lib = dir.join("libkernels.so");
    std::fs::write(&shim, include_str!("emu_shim.h")).expect("write shim");
    std::fs::write(&src, kernel_source()).expect("write kernels");
    let out = Command::new(&cxx)
        .args(["-std=c++14", "-O1", "-shared", "-fPIC"])
        // --fmad=false on the GPU: no contraction here either; warnings are errors, so a
        // suspicious conversion in the kernels fails the test.
        .args(["-ffp-contract=off", "-Wall", "-Wextra", "-Werror"])
        .arg("-include")
        .arg(&shim)
        .arg(&src)
        .arg("-o")
        .arg(&lib)
        .output()
        .expect("run the C++ compiler");
    assert!(
        out.status.success(),
        "kernels.cu does not compile as C++:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SAFETY: a library we just built from our own source; no initializers with side effects.
    let lib = unsafe { Library::new(&lib) }.expect("load the emulated kernels");
    Some(Emu { lib, _dir: dir })
}

impl Drop for Emu {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn with_canary<T: Copy>(len: usize, fill: T, canary: T) -> Vec<T> {
    let mut v = vec![fill; len + CANARY];
    v[len..].fill(canary);
    v
}

fn check_canary<T: Copy + PartialEq + std::fmt::Debug>(v: &[T], len: usize, canary: T, what: &str) {
    assert!(
        v[len..].iter().all(|&x| x == canary),
        "{what} wrote past its buffer"
    );
}

type Im2colLimbs = unsafe extern "C" fn(
    *const u32,
    *mut i8,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
);
type Reduce = unsafe extern "C" fn(*const i32, *mut u32, i32, i32, i32, i32, i32, i32, i32);

impl Emu {
    fn sym<T>(&self, name: &str) -> Symbol<'_, T> {
        // SAFETY: the types above mirror the kernel signatures in kernels.cu.
        unsafe { self.lib.get(name.as_bytes()) }.unwrap_or_else(|e| panic!("symbol {name}: {e}"))
    }

    /// The device field pipeline with emulated kernels and the reference int8 GEMM in between.
    fn field(&self, plan: &FieldPlan, a: &[i8], x: &[u32]) -> Vec<u32> {
        let g = &plan.geom;
        let i = |v: usize| v as i32;
        let mut b = with_canary(plan.b_len(), 99i8, 77i8);
        let f: Symbol<Im2colLimbs> = self.sym("field_im2col_limbs");
        // SAFETY: buffers of the sizes the plan computes (plus canaries).
        unsafe {
            f(
                x.as_ptr(),
                b.as_mut_ptr(),
                i(g.in_c),
                i(g.h),
                i(g.w),
                i(g.kh),
                i(g.kw),
                i(g.stride[0]),
                i(g.stride[1]),
                i(g.pads[0]),
                i(g.pads[1]),
                i(g.ow),
                i(g.groups),
                i(plan.k),
                i(plan.kp),
                i(plan.npix),
                i(plan.pp),
            )
        };
        check_canary(&b, plan.b_len(), 77, "field_im2col_limbs");
        b.truncate(plan.b_len());
        assert_eq!(
            b,
            im2col_limbs_reference(plan, x),
            "B operand differs from the Rust reference"
        );
        let mut c = vec![0i32; plan.c_len()];
        for gm in plan.gemms() {
            i8_gemm_reference(&gm, a, &b, &mut c);
        }
        let mut y = with_canary(g.out_len(), u32::MAX, 0xdead_beef);
        let r: Symbol<Reduce> = self.sym("field_reduce");
        // SAFETY: as above.
        unsafe {
            r(
                c.as_ptr(),
                y.as_mut_ptr(),
                i(g.out_c),
                i(g.groups),
                i(plan.npix),
                i(plan.pp),
                i(plan.mp),
                i(plan.lw),
                i(plan.chunks),
            )
        };
        check_canary(&y, g.out_len(), 0xdead_beef, "field_reduce");
        y.truncate(g.out_len());
        y
    }
}

#[allow(clippy::too_many_arguments)]
fn conv_geom(
    in_c: usize,
    h: usize,
    w: usize,
    out_c: usize,
    k: usize,
    s: usize,
    pads: [usize; 4],
    groups: usize,
) -> ConvGeom {
    let c = Conv {
        out_c,
        in_c,
        kh: k,
        kw: k,
        stride: [s, s],
        pads,
        groups,
        weight: vec![],
        bias: vec![],
    };
    ConvGeom::new(&c, h, w).unwrap()
}

#[test]
fn emulated_field_kernels_are_exact() {
    let Some(emu) = build() else { return };
    let mut rng = Lcg(11);
    let cases: Vec<(LinearShape, i32)> = vec![
        (
            LinearShape::Conv(conv_geom(3, 9, 11, 8, 3, 1, [1; 4], 1)),
            127,
        ),
        (
            LinearShape::Conv(conv_geom(8, 10, 10, 8, 3, 2, [1; 4], 4)),
            127,
        ),
        (
            LinearShape::Conv(conv_geom(6, 7, 7, 6, 3, 1, [1; 4], 6)),
            1 << 15,
        ),
        (
            LinearShape::Conv(conv_geom(16, 5, 5, 4, 1, 1, [0; 4], 1)),
            300,
        ),
        (
            LinearShape::Conv(conv_geom(5, 8, 6, 3, 2, 3, [0, 1, 2, 0], 1)),
            1 << 15,
        ),
        (
            LinearShape::Conv(conv_geom(512, 3, 3, 2, 3, 1, [1; 4], 1)),
            127,
        ), // K = 4608
        (
            LinearShape::Dense {
                in_f: 25_088,
                out_f: 3,
            },
            127,
        ),
        (LinearShape::Dense { in_f: 37, out_f: 5 }, 1 << 15),
        (
            LinearShape::Dense {
                in_f: 8191,
                out_f: 2,
            },
            1 << 15,
        ), // the largest K at |w| = 2^15
    ];
    for (shape, wmax) in cases {
        for worst in [true, false] {
            let w: Vec<i32> = (0..shape.weight_len())
                .map(|j| match (worst, j % 3) {
                    (true, 0) => -wmax,
                    (true, _) => wmax,
                    _ => rng.weight(wmax),
                })
                .collect();
            let plan = FieldPlan::new(&shape, &w).unwrap();
            let a = plan.pack_weights(&w);
            let n = shape.in_len();
            for x in [
                vec![P - 1; n],
                vec![WORST_INPUT; n], // digits −128, −127, −128
                vec![LIMB_THRESHOLD; n],
                vec![LIMB_THRESHOLD + 1; n],
                (0..n).map(|_| rng.field()).collect(),
            ] {
                assert_eq!(
                    emu.field(&plan, &a, &x),
                    reference(&shape, &w, &x),
                    "{shape:?}, wmax {wmax}, worst {worst}"
                );
            }
        }
    }
}

#[test]
fn emulated_field_kernels_chunk_large_k() {
    let Some(emu) = build() else { return };
    // Three K chunks, every product at its largest magnitude (see limbs.rs).
    let k = 140_000;
    let shape = LinearShape::Dense { in_f: k, out_f: 2 };
    let w = vec![-128; 2 * k];
    let plan = FieldPlan::new(&shape, &w).unwrap();
    assert_eq!(plan.chunks, 3);
    let a = plan.pack_weights(&w);
    for x in [vec![WORST_INPUT; k], vec![P - 1; k]] {
        assert_eq!(emu.field(&plan, &a, &x), reference(&shape, &w, &x));
    }
}

// ---- the tail's kernels ----

type Im2colF32 = unsafe extern "C" fn(
    *const f32,
    *mut f32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
);
type BiasAct = unsafe extern "C" fn(*mut f32, *const f32, i64, i32, i64, i32);
type Clip = unsafe extern "C" fn(*const f32, *mut f32, i64, f32, f32);
type BatchNorm = unsafe extern "C" fn(*const f32, *mut f32, *const f32, *const f32, i64, i32, i64);
type PoolF = unsafe extern "C" fn(
    *const f32,
    *mut f32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
);
type GlobalAvg = unsafe extern "C" fn(*const f32, *mut f32, i32, i64);
type Add = unsafe extern "C" fn(*const f32, *const f32, *mut f32, i64);
type Softmax = unsafe extern "C" fn(*const f32, *mut f32, i32, i32);

fn tensor(shape: Vec<usize>, rng: &mut Lcg) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape, (0..n).map(|_| rng.f32() * 3.0).collect()).unwrap()
}

fn node(op: Op, inputs: Vec<usize>) -> Node {
    Node {
        name: "n".into(),
        op,
        inputs: inputs
            .into_iter()
            .map(origami_model::ValueId::new)
            .collect(),
        output: origami_model::ValueId::new(9),
    }
}

#[test]
fn emulated_im2col_f32_matches_the_cpu_layout() {
    let Some(emu) = build() else { return };
    let f: Symbol<Im2colF32> = emu.sym("im2col_f32");
    let mut rng = Lcg(12);
    for g in [
        conv_geom(3, 9, 11, 8, 3, 1, [1; 4], 1),
        conv_geom(8, 10, 10, 8, 3, 2, [1, 0, 2, 1], 4),
        conv_geom(6, 7, 7, 6, 3, 1, [1; 4], 6),
        conv_geom(2, 6, 8, 2, 2, 3, [0; 4], 1),
    ] {
        let nb = 3;
        let x = tensor(vec![nb, g.in_c, g.h, g.w], &mut rng);
        let (k, npix) = (g.k(), g.oh * g.ow);
        let ipg = g.in_c / g.groups;
        for grp in 0..g.groups {
            let len = nb * k * npix;
            let mut cols = with_canary(len, f32::NAN, -7.5);
            let i = |v: usize| v as i32;
            // SAFETY: sizes as the kernel expects (plus canaries).
            unsafe {
                f(
                    x.data.as_ptr(),
                    cols.as_mut_ptr(),
                    i(nb),
                    i(g.in_c),
                    i(g.h),
                    i(g.w),
                    i(g.kh),
                    i(g.kw),
                    i(g.stride[0]),
                    i(g.stride[1]),
                    i(g.pads[0]),
                    i(g.pads[1]),
                    i(g.oh),
                    i(g.ow),
                    i(g.groups),
                    i(grp),
                )
            };
            check_canary(&cols, len, -7.5, "im2col_f32");
            for b in 0..nb {
                let img = &x.data[b * g.in_len()..][grp * ipg * g.h * g.w..];
                let mut want = vec![0f32; k * npix];
                im2col(&g, img, 0, npix, &mut want);
                assert_eq!(
                    &cols[b * k * npix..(b + 1) * k * npix],
                    &want[..],
                    "{g:?} group {grp}"
                );
            }
        }
    }
}

#[test]
fn emulated_elementwise_kernels_match_the_cpu_executor() {
    let Some(emu) = build() else { return };
    let mut rng = Lcg(13);
    let x = tensor(vec![2, 5, 7, 6], &mut rng);
    let y = tensor(vec![2, 5, 7, 6], &mut rng);
    let n = x.len();
    let eval = |op: Op, ins: &[&Tensor]| {
        exec::eval_node(&node(op, (0..ins.len()).collect()), ins, 1).unwrap()
    };
    let run = |f: &dyn Fn(*mut f32), len: usize| -> Vec<f32> {
        let mut out = with_canary(len, f32::NAN, 1234.5);
        f(out.as_mut_ptr());
        check_canary(&out, len, 1234.5, "kernel");
        out.truncate(len);
        out
    };

    let clip: Symbol<Clip> = emu.sym("clip_f32");
    for (op, lo, hi) in [
        (Op::Relu, 0.0, f32::INFINITY),
        (
            Op::Clip {
                min: -0.5,
                max: 0.25,
            },
            -0.5,
            0.25,
        ),
    ] {
        // SAFETY (every call below): in/out buffers of the lengths passed.
        let got = run(
            &|o| unsafe { clip(x.data.as_ptr(), o, n as i64, lo, hi) },
            n,
        );
        assert_eq!(got, eval(op, &[&x]).data);
    }

    let scale: Vec<f32> = (0..5).map(|_| rng.f32() + 1.0).collect();
    let shift: Vec<f32> = (0..5).map(|_| rng.f32()).collect();
    let bn: Symbol<BatchNorm> = emu.sym("batchnorm_f32");
    let got = run(
        &|o| unsafe {
            bn(
                x.data.as_ptr(),
                o,
                scale.as_ptr(),
                shift.as_ptr(),
                n as i64,
                5,
                42,
            )
        },
        n,
    );
    assert_eq!(
        got,
        eval(
            Op::BatchNorm {
                scale: scale.clone(),
                shift: shift.clone()
            },
            &[&x]
        )
        .data
    );

    let add: Symbol<Add> = emu.sym("add_f32");
    let got = run(
        &|o| unsafe { add(x.data.as_ptr(), y.data.as_ptr(), o, n as i64) },
        n,
    );
    assert_eq!(got, eval(Op::Add, &[&x, &y]).data);

    let gap: Symbol<GlobalAvg> = emu.sym("global_avg_f32");
    let got = run(&|o| unsafe { gap(x.data.as_ptr(), o, 10, 42) }, 10);
    assert_eq!(got, eval(Op::GlobalAvgPool, &[&x]).data);

    let sm: Symbol<Softmax> = emu.sym("softmax_f32");
    let got = run(&|o| unsafe { sm(x.data.as_ptr(), o, (n / 6) as i32, 6) }, n);
    let want = eval(Op::Softmax, &[&x]).data;
    // expf (C) and f32::exp (Rust) may differ by an ulp: compare within 1e-6.
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-6, "softmax differs by {diff}");

    // bias (+ ReLU) as after a convolution: y[b][c][p] += bias[c].
    let bias: Vec<f32> = (0..5).map(|_| rng.f32()).collect();
    let ba: Symbol<BiasAct> = emu.sym("bias_act");
    for relu in [0, 1] {
        let mut got = x.data.clone();
        // SAFETY: n elements, 5 biases.
        unsafe { ba(got.as_mut_ptr(), bias.as_ptr(), n as i64, 5, 42, relu) };
        let want: Vec<f32> = x
            .data
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let s = v + bias[(i / 42) % 5];
                if relu == 1 {
                    s.max(0.0)
                } else {
                    s
                }
            })
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn emulated_pooling_matches_the_cpu_executor() {
    let Some(emu) = build() else { return };
    let f: Symbol<PoolF> = emu.sym("pool_f32");
    let mut rng = Lcg(14);
    let x = tensor(vec![2, 3, 9, 8], &mut rng);
    let pools = [
        Pool {
            kernel: [2, 2],
            stride: [2, 2],
            pads: [0; 4],
            count_include_pad: false,
        },
        Pool {
            kernel: [3, 3],
            stride: [2, 2],
            pads: [1; 4],
            count_include_pad: false,
        },
        Pool {
            kernel: [3, 2],
            stride: [1, 2],
            pads: [1, 0, 2, 1],
            count_include_pad: true,
        },
    ];
    for p in pools {
        for mode in [0, 1] {
            let op = if mode == 0 {
                Op::MaxPool(p.clone())
            } else {
                Op::AvgPool(p.clone())
            };
            let want = exec::eval_node(&node(op, vec![0]), &[&x], 1).unwrap();
            let (oh, ow) = (want.shape[2], want.shape[3]);
            let len = want.len();
            let mut out = with_canary(len, f32::NAN, 4321.0);
            // SAFETY: sizes as computed by the CPU executor.
            unsafe {
                f(
                    x.data.as_ptr(),
                    out.as_mut_ptr(),
                    6,
                    9,
                    8,
                    oh as i32,
                    ow as i32,
                    p.kernel[0] as i32,
                    p.kernel[1] as i32,
                    p.stride[0] as i32,
                    p.stride[1] as i32,
                    p.pads[0] as i32,
                    p.pads[1] as i32,
                    mode,
                    p.count_include_pad as i32,
                )
            };
            check_canary(&out, len, 4321.0, "pool_f32");
            out.truncate(len);
            assert_eq!(out, want.data, "{p:?} mode {mode}");
        }
    }
    // The zoo's models use these shapes too (sanity: resnet_small has an AvgPool with padding).
    assert!(zoo::resnet_small()
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::AvgPool(_))));
}
