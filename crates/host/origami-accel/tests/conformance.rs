//! Every CPU-side accelerator runs the one conformance suite: one test per property for each
//! backend (`conformance_tests!`), and the whole suite on the wrappers.

use origami_accel::conformance::check_all;
use origami_accel::{CpuAccelerator, FieldKernel, Limbs, Recording, Tampering};

/// The CPU accelerator: bit-exact (tolerance 0) on every property.
mod cpu {
    use super::*;
    origami_accel::conformance_tests!(Some(CpuAccelerator::new()), 0.0);
}

/// Each field kernel forced in turn: f64, four 7-bit limbs (any int8 kernel), three 8-bit limbs
/// (only where this CPU's int8 kernel cannot saturate: it says so and skips otherwise).
mod cpu_f64 {
    use super::*;
    origami_accel::conformance_tests!(
        Some(CpuAccelerator::with_field_kernel(FieldKernel::F64).unwrap()),
        0.0
    );
}
mod cpu_int8_seven_bit_limbs {
    use super::*;
    origami_accel::conformance_tests!(
        Some(CpuAccelerator::with_field_kernel(FieldKernel::Int8(Limbs::Seven)).unwrap()),
        0.0
    );
}
mod cpu_int8_eight_bit_limbs {
    use super::*;
    origami_accel::conformance_tests!(
        CpuAccelerator::with_field_kernel(FieldKernel::Int8(Limbs::Eight))
            .map_err(|e| eprintln!("skipped: {e}"))
            .ok(),
        0.0
    );
}

#[test]
fn the_default_cpu_backend_names_its_field_kernel() {
    let name = origami_accel::Accelerator::name(&CpuAccelerator::new());
    assert!(name.contains("field: int8"), "{name}");
}

/// The recording wrapper changes nothing the suite can see.
mod recording {
    use super::*;
    origami_accel::conformance_tests!(Some(Recording::new(CpuAccelerator::new())), 0.0);
}

#[test]
fn recording_wrapper_records_every_call() {
    let mut r = Recording::new(CpuAccelerator::new());
    check_all(&mut r, 0.0).unwrap();
    assert!(r.records.len() > 20);
}

#[test]
fn the_suite_catches_a_tampering_accelerator() {
    let err = check_all(&mut Tampering::new(CpuAccelerator::new(), None), 0.0).unwrap_err();
    assert!(err.contains("not exact mod p"), "{err}");
}
