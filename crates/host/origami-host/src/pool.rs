//! The host's pool of precomputed pads, I/O-free: the sealed pads it holds (`PadStore`), how
//! many requests they cover, and the refill policy between two watermarks. The server's worker
//! and the in-process `Engine` both keep their pads here; what talks to the enclave (precompute,
//! begin) stays with them, and tells the pool what happened.

use origami_field::SealedPad;

use crate::PadStore;

/// Sealed pads with their count and refill watermarks.
pub struct PadPool {
    store: PadStore,
    ready: usize,
    low: usize,
    high: usize,
    refilling: bool,
}

impl PadPool {
    /// An empty pool that refills below `low` pads and stops at `high` (`high` is raised to
    /// `low` if below it).
    pub fn new(low: usize, high: usize) -> Self {
        Self::from_store(PadStore::default(), low, high)
    }

    /// A pool holding `store` (a pad file's pads).
    pub fn from_store(store: PadStore, low: usize, high: usize) -> Self {
        Self {
            ready: store.pad_count(),
            store,
            low,
            high: high.max(low),
            refilling: true,
        }
    }

    /// Pads ready for requests (the host's count; the enclave's word wins, see `exhausted`).
    pub fn ready(&self) -> usize {
        self.ready
    }

    /// Pads the pool lacks to reach its low watermark (what to precompute before serving).
    pub fn shortfall(&self) -> usize {
        self.low.saturating_sub(self.ready)
    }

    /// Whether to precompute one more pad now, while idle: refilling starts below the low
    /// watermark and stops at the high one (hysteresis, so an idle server does not precompute
    /// one pad per request forever).
    pub fn wants_refill(&mut self) -> bool {
        if self.ready < self.low {
            self.refilling = true;
        }
        if self.ready >= self.high {
            self.refilling = false;
        }
        self.refilling
    }

    /// Adds the sealed layers of `count` freshly precomputed pads.
    pub fn add(&mut self, sealed: Vec<SealedPad>, count: usize) {
        self.store.insert_all(sealed);
        self.ready += count;
    }

    /// The pad to offer the enclave for the next request (the oldest held).
    pub fn next_pad(&self) -> Option<u64> {
        self.store.next_pad()
    }

    /// The enclave took a pad for a request.
    pub fn consumed(&mut self) {
        self.ready = self.ready.saturating_sub(1);
    }

    /// The enclave does not hold `pad` (e.g. a pad file of an earlier precompute): it is
    /// dropped, never offered again, and the count is taken from what is left.
    pub fn discard(&mut self, pad: u64) {
        self.store.discard(pad);
        self.ready = self.store.pad_count();
    }

    /// The enclave said it has no pad ready: the host's count was an estimate.
    pub fn exhausted(&mut self) {
        self.ready = 0;
    }

    /// A new enclave instance: every pad of the old one is void.
    pub fn reset(&mut self) {
        self.store = PadStore::default();
        self.ready = 0;
        self.refilling = true;
    }

    /// The sealed pads held.
    pub fn sealed(&self) -> &PadStore {
        &self.store
    }

    /// The sealed pads, for serving a request's offloads (`drive`, `drive_head`).
    pub fn store(&mut self) -> &mut PadStore {
        &mut self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pad(id: u64, layer: u16) -> SealedPad {
        SealedPad {
            pad_id: id,
            layer,
            len: 1,
            ciphertext: vec![0; 32],
        }
    }

    #[test]
    fn refills_between_the_watermarks_with_hysteresis() {
        let mut p = PadPool::new(2, 4);
        assert_eq!(p.shortfall(), 2);
        let mut id = 0;
        let mut made = 0;
        while p.wants_refill() {
            p.add(vec![pad(id, 0), pad(id, 1)], 1);
            id += 1;
            made += 1;
        }
        assert_eq!((made, p.ready()), (4, 4));
        // Serving three requests goes below the high watermark but not below the low one:
        // no refill yet.
        for _ in 0..2 {
            p.consumed();
            assert!(!p.wants_refill());
        }
        p.consumed();
        assert_eq!(p.ready(), 1);
        assert!(p.wants_refill(), "below the low watermark");
        p.add(vec![pad(id, 0)], 1);
        assert!(p.wants_refill(), "refills up to the high watermark");
    }

    #[test]
    fn discard_exhausted_and_reset_correct_the_count() {
        let mut p = PadPool::new(0, 0);
        p.add(vec![pad(3, 0), pad(3, 1), pad(5, 0), pad(5, 1)], 2);
        assert_eq!(p.next_pad(), Some(3));
        p.discard(3);
        assert_eq!((p.ready(), p.next_pad()), (1, Some(5)));
        assert!(
            p.store().take(3, 0).is_none(),
            "a discarded pad is never offered"
        );
        p.exhausted();
        assert_eq!(p.ready(), 0);
        p.add(vec![pad(7, 0)], 1);
        p.reset();
        assert_eq!((p.ready(), p.next_pad()), (0, None));
        assert!(!p.wants_refill(), "watermarks at zero: never refills");
    }
}
