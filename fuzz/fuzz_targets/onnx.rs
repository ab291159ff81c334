//! The ONNX importer on arbitrary bytes: no panic, no abort, no allocation bomb. What imports
//! passes shape inference within the size caps, and a small imported model also runs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use origami_model::{exec, onnx, Tensor, MAX_TOTAL_ELEMENTS, MAX_VALUE_ELEMENTS};

/// Models at most this big (elements of all values, multiply-accumulates) are also run.
const RUN_ELEMENTS: usize = 1 << 16;
const RUN_MACS: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // No base directory: external tensor data is refused, the fuzzer never touches files.
    let Ok(model) = onnx::from_bytes(data, None) else {
        return;
    };
    let shapes = model.validate().expect("an imported model validates");
    let mut total = 0usize;
    for s in &shapes {
        let n = s
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .expect("a value size overflows");
        assert!(
            n <= MAX_VALUE_ELEMENTS,
            "a value of {n} elements was accepted"
        );
        total += n;
    }
    assert!(
        total <= MAX_TOTAL_ELEMENTS,
        "values of {total} elements were accepted"
    );
    let macs = model.macs().expect("macs of a valid model");
    let _ = model.hash();
    let _ = onnx::to_bytes(&model);
    if total <= RUN_ELEMENTS && macs <= RUN_MACS {
        let mut shape = vec![1];
        shape.extend_from_slice(&model.input_shape);
        let x = Tensor::zeros(shape);
        let _ = exec::run(&model, &x);
    }
});
