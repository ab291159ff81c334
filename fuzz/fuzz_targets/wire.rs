//! Message decoding on both sides of the host–enclave socket and of the HTTP body: no panic,
//! and what decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use origami_proto::session::{SealedAnswer, SealedRequest};
use origami_proto::tensor::WireTensor;
use origami_proto::wire::{FromEnclave, ToEnclave};
use origami_proto::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = decode::<ToEnclave>(data) {
        assert_eq!(encode(&m), data);
    }
    let _ = decode::<FromEnclave>(data);
    if let Ok(r) = decode::<SealedRequest>(data) {
        assert_eq!(encode(&r), data);
    }
    let _ = decode::<SealedAnswer>(data);
    let _ = WireTensor::decode_exact(data, &[1, 1, 28, 28]);
});
