//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes. Decoding is bounded:
//! a length above the reader's limit is an error before anything is allocated, and a frame is
//! read into a buffer of exactly its announced size only once the limit check passed.

use std::io::{Read, Write};

use crate::ProtoError;

/// Default bound on one frame (a VGG-16 224×224 blinded block-1 tensor is 12.25 MiB as u32).
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, payload: &[u8], max: usize) -> Result<(), ProtoError> {
    if payload.len() > max || payload.len() > u32::MAX as usize {
        return Err(ProtoError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    w.write_all(&(payload.len() as u32).to_be_bytes())?;
    w.write_all(payload)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Option<Vec<u8>>, ProtoError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtoError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(ProtoError::TooLarge { len: n, max });
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ProtoError::Truncated,
        _ => e.into(),
    })?;
    Ok(Some(buf))
}

/// Splits complete frames off the front of `buf` (for byte streams that arrive in pieces):
/// returns the frame and the bytes consumed, `Ok(None)` when more bytes are needed.
pub fn split_frame(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, ProtoError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if n > max {
        return Err(ProtoError::TooLarge { len: n, max });
    }
    if buf.len() - 4 < n {
        return Ok(None);
    }
    Ok(Some((&buf[4..4 + n], 4 + n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_one_stream() {
        let mut buf = Vec::new();
        for p in [&b""[..], b"a", &[7u8; 1000]] {
            write_frame(&mut buf, p, 4096).unwrap();
        }
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 4096).unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r, 4096).unwrap().unwrap(), b"a");
        assert_eq!(read_frame(&mut r, 4096).unwrap().unwrap(), vec![7u8; 1000]);
        assert!(read_frame(&mut r, 4096).unwrap().is_none());
        // The same bytes split incrementally.
        let (f, used) = split_frame(&buf[4..], 4096).unwrap().unwrap();
        assert_eq!((f, used), (&b"a"[..], 5));
        assert!(split_frame(&buf[..3], 4096).unwrap().is_none());
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors_without_allocation() {
        // A 4 GiB announcement is refused from its header alone.
        let mut r = &[0xffu8, 0xff, 0xff, 0xff, 1, 2][..];
        assert!(matches!(
            read_frame(&mut r, 1 << 20),
            Err(ProtoError::TooLarge { .. })
        ));
        assert!(split_frame(&[0xff; 8], 1 << 20).is_err());
        let mut r = &[0u8, 0, 0, 9, 1, 2][..];
        assert!(matches!(read_frame(&mut r, 64), Err(ProtoError::Truncated)));
        let mut r = &[0u8, 0][..];
        assert!(matches!(read_frame(&mut r, 64), Err(ProtoError::Truncated)));
        assert!(write_frame(&mut Vec::new(), &[0; 65], 64).is_err());
    }
}
