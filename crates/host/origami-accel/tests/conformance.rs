//! Every CPU-side accelerator runs the one conformance suite.

use origami_accel::conformance::check_all;
use origami_accel::{CpuAccelerator, Recording, Tampering};

#[test]
fn cpu_accelerator_conforms_bit_exactly() {
    check_all(&mut CpuAccelerator::new(), 0.0).unwrap();
}

#[test]
fn recording_wrapper_conforms_and_records() {
    let mut r = Recording::new(CpuAccelerator::new());
    check_all(&mut r, 0.0).unwrap();
    assert!(r.records.len() > 20);
}

#[test]
fn the_suite_catches_a_tampering_accelerator() {
    let err = check_all(&mut Tampering::new(CpuAccelerator::new(), None), 0.0).unwrap_err();
    assert!(err.contains("not exact mod p"), "{err}");
}
