//! Every CPU-side accelerator runs the one conformance suite: one test per property for each
//! backend (`conformance_tests!`), and the whole suite on the wrappers.

use origami_accel::conformance::check_all;
use origami_accel::{CpuAccelerator, Recording, Tampering};

/// The CPU accelerator: bit-exact (tolerance 0) on every property.
mod cpu {
    use super::*;
    origami_accel::conformance_tests!(Some(CpuAccelerator::new()), 0.0);
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
