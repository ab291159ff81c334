//! Tests of `pad`.
use super::*;

#[test]
fn streams_differ_per_pad_and_layer_and_are_reproducible() {
    let k = PadKey::insecure_from_seed_for_tests([7; 32]);
    let mut a = vec![0u32; 64];
    let mut b = vec![0u32; 64];
    let mut c = vec![0u32; 64];
    k.mask_stream(1, 0).fill(&mut a);
    k.mask_stream(1, 1).fill(&mut b);
    k.mask_stream(1, 0).fill(&mut c);
    assert_ne!(a, b);
    assert_eq!(a, c);
    assert!(a.iter().all(|&v| v < P));
}

/// The mask stream is AES-256-CTR with counter block stream ‖ block index: NIST SP 800-38A
/// F.5.5 (CTR-AES256), whose initial counter block f0f1…ff is stream f0f1f2f3f4f5f6f7,
/// block f8f9fafbfcfdfeff. Keystream = ciphertext ⊕ plaintext; elements are its little-endian
/// 32-bit words masked to 24 bits.
#[test]
fn mask_stream_is_aes256_ctr() {
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let key: [u8; 32] = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
        .try_into()
        .unwrap();
    let pt = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
    let ct = hex("601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5");
    let ks: Vec<u8> = pt.iter().zip(&ct).map(|(p, c)| p ^ c).collect();
    let mut rng = MaskRng::new(&key, 0xf0f1_f2f3_f4f5_f6f7, 0xf8f9_fafb_fcfd_feff);
    let want: Vec<u32> = ks
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) & 0x00FF_FFFF)
        .filter(|&v| v < P)
        .collect();
    let mut got = vec![0u32; want.len()];
    rng.fill(&mut got);
    assert_eq!(got, want);
    // Refills continue the counter: the second chunk starts at block MASK_CHUNK / 16 (no
    // word of the first chunk is rejected under this key, so it gives MASK_CHUNK / 4
    // elements).
    let words = MASK_CHUNK / 4;
    let mut all = vec![0u32; words + 76];
    MaskRng::new(&key, 7, 0).fill(&mut all);
    let mut second = MaskRng::new(&key, 7, (MASK_CHUNK / 16) as u64);
    let mut next = vec![0u32; 76];
    second.fill(&mut next);
    assert_eq!(&all[words..], &next[..]);
}

/// The segmented mask: segment k is its own stretch of keystream (from block k·2^32), the
/// first segment is the plain stream, and the elements do not depend on the thread count.
#[test]
fn fill_mask_is_segmented_and_independent_of_threads() {
    let k = PadKey::insecure_from_seed_for_tests([6; 32]);
    let n = 3 * MASK_SEGMENT + 1234;
    let mut one = vec![0u32; n];
    k.fill_mask(5, 2, &mut one, 1);
    for threads in [2, 3, 4, 7] {
        let mut many = vec![0u32; n];
        k.fill_mask(5, 2, &mut many, threads);
        assert!(one == many, "threads {threads}");
    }
    let mut first = vec![0u32; MASK_SEGMENT];
    k.mask_stream(5, 2).fill(&mut first);
    assert_eq!(&one[..MASK_SEGMENT], &first[..]);
    let mut third = vec![0u32; MASK_SEGMENT];
    let mut r = k.mask_segment(5, 2, 2);
    assert_eq!(r.block, 2 << 32);
    r.fill(&mut third);
    assert_eq!(&one[2 * MASK_SEGMENT..3 * MASK_SEGMENT], &third[..]);
    // Segments differ from each other and from other layers' masks.
    assert_ne!(&one[..64], &one[MASK_SEGMENT..MASK_SEGMENT + 64]);
    let mut other = vec![0u32; 64];
    k.fill_mask(5, 3, &mut other, 1);
    assert_ne!(&one[..64], &other[..]);
}

/// `fill` (fast path over whole stretches) gives exactly the elements of `next_element`,
/// rejections included. A word is rejected with probability 3/2^24, so the test first
/// searches for streams whose first 1234 elements cross a rejected word.
#[test]
fn fill_matches_next_element_through_rejections() {
    let k = PadKey::insecure_from_seed_for_tests([5; 32]);
    let mut with_rejection = 0;
    for stream in 0..100_000u64 {
        let mut rng = k.mask_stream(stream, 1);
        let b: Vec<u32> = (0..1234).map(|_| rng.next_element()).collect();
        let rejected = rng.pos != 1234 * 4 % MASK_CHUNK;
        if !rejected && stream % 1000 != 0 {
            continue; // checked below only where the slow path runs (and now and then)
        }
        let mut a = vec![0u32; 1234];
        let mut f = k.mask_stream(stream, 1);
        f.fill(&mut a[..600]);
        f.fill(&mut a[600..]);
        assert_eq!(a, b, "stream {stream}");
        assert_eq!((f.block, f.pos), (rng.block, rng.pos), "stream {stream}");
        with_rejection += rejected as usize;
        if with_rejection == 3 {
            return;
        }
    }
    panic!("only {with_rejection} streams hit a rejected word: the slow path went untested");
}

#[test]
fn wipe_clears_every_byte_at_any_alignment() {
    let mut v: Vec<u8> = (1..=200).map(|i| i as u8).collect();
    for (start, end) in [(0, 200), (3, 197), (1, 2), (5, 5), (7, 64)] {
        v.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8 | 1);
        wipe(&mut v[start..end]);
        assert!(v[start..end].iter().all(|&b| b == 0));
        assert!(v[..start].iter().chain(&v[end..]).all(|&b| b != 0));
    }
}

#[test]
fn os_keys_differ() {
    let a = PadKey::from_os().unwrap();
    let b = PadKey::from_os().unwrap();
    let mut x = vec![0u32; 8];
    let mut y = vec![0u32; 8];
    a.mask_stream(0, 0).fill(&mut x);
    b.mask_stream(0, 0).fill(&mut y);
    assert_ne!(x, y);
    assert_eq!(format!("{a:?}"), "PadKey(<secret>)");
}

/// Chi-square test of r over 64 equal bins of Z_p (plus a check of the top bin edge, where a
/// biased reduction would show). 63 degrees of freedom: the 99.99th percentile is ≈ 112.
#[test]
fn mask_is_uniform_over_the_field() {
    let k = PadKey::from_os().unwrap();
    let mut rng = k.mask_stream(3, 2);
    const BINS: usize = 64;
    const N: usize = 640_000;
    let mut counts = [0u64; BINS];
    let mut top = 0u64; // values in the last 1/64 of the field, compared with the first
    let mut bottom = 0u64;
    for _ in 0..N {
        let v = rng.next_element();
        assert!(v < P);
        let bin = (v as u64 * BINS as u64 / P as u64) as usize;
        counts[bin] += 1;
        if v >= P - P / 1024 {
            top += 1;
        }
        if v < P / 1024 {
            bottom += 1;
        }
    }
    let expected = N as f64 / BINS as f64;
    let chi2: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    assert!(chi2 < 112.0, "chi-square {chi2} over {BINS} bins");
    // Each tail holds ≈ 625 draws; a range reduced to 80 % of the field would hold 0 at the top.
    assert!(top > 450 && bottom > 450, "top {top} bottom {bottom}");
}

#[test]
fn seal_round_trip_and_tamper_detection() {
    let s = Sealer::insecure_from_seed_for_tests([1; 32], [9; 32]);
    let u: Vec<u32> = (0..100).map(|i| (i * 7919) % P).collect();
    let sealed = s.seal(5, 3, &u);
    assert_eq!(&s.open(5, 3, 100, &sealed).unwrap()[..], &u[..]);
    let inplace = s.open_in_place(5, 3, 100, sealed.clone(), 1).unwrap();
    assert_eq!(inplace.len(), 400);
    assert_eq!(words(&inplace).collect::<Vec<_>>(), u);
    let mut t = sealed.clone();
    t.ciphertext[399] ^= 0x80;
    assert!(s.open_in_place(5, 3, 100, t, 1).is_err());
    assert!(s.open_in_place(5, 4, 100, sealed.clone(), 1).is_err());
    // Flipped bit.
    let mut t = sealed.clone();
    t.ciphertext[10] ^= 1;
    assert!(matches!(
        s.open(5, 3, 100, &t),
        Err(FieldError::SealTampered { .. })
    ));
    // Wrong pad id, wrong layer, wrong length, truncated.
    assert!(s.open(6, 3, 100, &sealed).is_err());
    assert!(s.open(5, 4, 100, &sealed).is_err());
    assert!(s.open(5, 3, 99, &sealed).is_err());
    let mut short = sealed.clone();
    short.ciphertext.truncate(20);
    assert!(s.open(5, 3, 100, &short).is_err());
    // Another model, another instance key.
    let other_model = Sealer::insecure_from_seed_for_tests([1; 32], [8; 32]);
    assert!(other_model.open(5, 3, 100, &sealed).is_err());
    let other_instance = Sealer::from_os([9; 32]).unwrap();
    assert!(other_instance.open(5, 3, 100, &sealed).is_err());
}

/// A u of several pieces opens on any number of threads; every piece and every tag is
/// authenticated, and pieces cannot be swapped, dropped or taken from another u.
#[test]
fn multi_piece_seal_opens_on_threads_and_refuses_tampering() {
    let s = Sealer::insecure_from_seed_for_tests([2; 32], [9; 32]);
    let n = 2 * PIECE_WORDS + 777;
    let u: Vec<u32> = (0..n as u64)
        .map(|i| (i * 7919 % P as u64) as u32)
        .collect();
    let sealed = s.seal(8, 1, &u);
    assert_eq!(sealed.ciphertext.len(), sealed_len(n).unwrap());
    assert_eq!(sealed.ciphertext.len(), n * 4 + 3 * TAG_LEN);
    for threads in [1, 2, 3, 5] {
        let opened = s.open_in_place(8, 1, n, sealed.clone(), threads).unwrap();
        assert!(words(&opened).eq(u.iter().copied()), "threads {threads}");
    }
    let refused = |c: Vec<u8>, len: usize| {
        let mut t = sealed.clone();
        t.ciphertext = c;
        matches!(
            s.open_in_place(8, 1, len, t, 2),
            Err(FieldError::SealTampered { .. })
        )
    };
    // A bit of the last piece, of the second tag.
    let mut c = sealed.ciphertext.clone();
    c[n * 4 - 1] ^= 1;
    assert!(refused(c, n));
    let mut c = sealed.ciphertext.clone();
    c[n * 4 + TAG_LEN + 3] ^= 0x40;
    assert!(refused(c, n));
    // The first two pieces (and their tags) swapped.
    let b = PIECE_WORDS * 4;
    let mut c = sealed.ciphertext.clone();
    let (p0, p1) = (c[..b].to_vec(), c[b..2 * b].to_vec());
    c[..b].copy_from_slice(&p1);
    c[b..2 * b].copy_from_slice(&p0);
    let (t0, t1) = (
        c[n * 4..n * 4 + TAG_LEN].to_vec(),
        c[n * 4 + TAG_LEN..n * 4 + 2 * TAG_LEN].to_vec(),
    );
    c[n * 4..n * 4 + TAG_LEN].copy_from_slice(&t1);
    c[n * 4 + TAG_LEN..n * 4 + 2 * TAG_LEN].copy_from_slice(&t0);
    assert!(refused(c, n));
    // The last piece dropped (with its tag), claimed as a shorter u.
    let mut c = sealed.ciphertext[..2 * b].to_vec();
    c.extend_from_slice(&sealed.ciphertext[n * 4..n * 4 + 2 * TAG_LEN]);
    assert!(refused(c, 2 * PIECE_WORDS));
    // The first piece of another u with the same binding but another length.
    let other = s.seal(8, 1, &u[..PIECE_WORDS]);
    let mut c = sealed.ciphertext.clone();
    c[..b].copy_from_slice(&other.ciphertext[..b]);
    c[n * 4..n * 4 + TAG_LEN].copy_from_slice(&other.ciphertext[b..b + TAG_LEN]);
    assert!(refused(c, n));
}
