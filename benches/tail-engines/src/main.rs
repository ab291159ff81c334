//! `tail-engines MODEL.onnx THREADS ITERS`: median latency of one batch-1 inference of the
//! whole model (the `plain` placement's tail) with Origami's float executor, with tract and with
//! rten (two ONNX engines written in Rust), on the same input, with the largest difference of
//! each engine's logits from ours.
//! `tail-engines export SPEC OUT.onnx` writes a zoo model (`resnet50`, `vgg16@64`, ...).

use std::sync::Arc;
use std::time::Instant;

use tract_onnx::prelude::*;

fn median_ms(iters: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut v: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn max_rel_diff(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "output sizes differ");
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0f32, f32::max)
}

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "export" {
        let m = origami_model::zoo::load(&args[2])?;
        origami_model::onnx::save(&m, std::path::Path::new(&args[3]))?;
        return Ok(());
    }
    if args.len() != 4 {
        eprintln!(
            "usage: tail-engines MODEL.onnx THREADS ITERS | tail-engines export SPEC OUT.onnx"
        );
        std::process::exit(2);
    }
    let (path, threads, iters) = (
        &args[1],
        args[2].parse::<usize>()?,
        args[3].parse::<usize>()?,
    );
    let model = origami_model::onnx::load(std::path::Path::new(path))?;
    let x = origami_model::zoo::seeded_input(&model, 7);
    let want = origami_model::exec::run(&model, &x)?;

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let ours = pool.install(|| {
        median_ms(iters, || {
            origami_model::exec::run(&model, &x).unwrap();
        })
    });

    // tract multithreads its matrix products on a pool of its own.
    tract_linalg::multithread::set_default_executor(if threads > 1 {
        tract_linalg::multithread::Executor::multithread(threads)
    } else {
        tract_linalg::multithread::Executor::SingleThread
    });
    let shape = x.shape.clone();
    let tract = tract_onnx::onnx()
        .model_for_path(path)?
        .with_input_fact(0, f32::fact(&shape).into())?
        .into_optimized()?
        .into_runnable()?;
    let input: Tensor =
        tract_ndarray::ArrayD::from_shape_vec(shape.clone(), x.data.clone())?.into();
    let got = tract.run(tvec!(input.clone().into()))?;
    let tract_diff = max_rel_diff(
        got[0].to_plain_array_view::<f32>()?.as_slice().unwrap(),
        &want.data,
    );
    let tract_ms = median_ms(iters, || {
        tract.run(tvec!(input.clone().into())).unwrap();
    });

    let rten = rten::Model::load_file(path)?;
    let opts = rten::RunOptions::default()
        .with_thread_pool(Some(Arc::new(rten::ThreadPool::with_num_threads(threads))));
    let rin = || {
        rten_tensor::NdTensor::from_data([shape[0], shape[1], shape[2], shape[3]], x.data.clone())
    };
    let out = rten.run_one(rin().into(), Some(opts.clone()))?;
    let out: rten_tensor::NdTensor<f32, 2> = out.try_into()?;
    let rten_diff = {
        use rten_tensor::prelude::*;
        max_rel_diff(&out.to_vec(), &want.data)
    };
    let rten_ms = median_ms(iters, || {
        rten.run_one(rin().into(), Some(opts.clone())).unwrap();
    });

    println!(
        "{} | {threads} thread(s) | origami {ours:.1} ms | tract {tract_ms:.1} ms (diff {tract_diff:.1e}) | rten {rten_ms:.1} ms (diff {rten_diff:.1e})",
        model.name,
    );
    Ok(())
}
