//! Frame decoding: any byte stream gives frames, "need more", or an error; never a panic or an
//! allocation beyond the limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use origami_proto::frame::{read_frame, split_frame};

const MAX: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((f, used))) = split_frame(rest, MAX) {
        assert!(f.len() <= MAX && used == f.len() + 4);
        rest = &rest[used..];
    }
    let mut r = data;
    while let Ok(Some(f)) = read_frame(&mut r, MAX) {
        assert!(f.len() <= MAX);
    }
});
