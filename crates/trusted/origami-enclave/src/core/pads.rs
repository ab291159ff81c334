//! Offline pads: precomputing u = W·r per offloaded layer, sealing it for the host, and the
//! enclave's own record of each ready pad.

use zeroize::{Zeroize, Zeroizing};

use origami_field::{reduce_f64, SealedPad};
use origami_model::linalg::{conv2d, gemm_nt, LinearShape};
use origami_plan::EnclaveError;

use super::{tile_bytes, EnclaveCore};
use crate::probe::TRIALS;

/// A precomputed pad not yet used: its id, and per linear layer the probe's sums over its
/// u = W·r (`Probe::pad_sums`; zeros where a layer has no probe), computed with u offline so
/// that the online check never reads u. Derived from secrets: kept in the enclave, wiped.
pub(super) struct ReadyPad {
    pub(super) id: u64,
    pub(super) sums: Zeroizing<Vec<[u32; TRIALS]>>,
}

impl EnclaveCore {
    /// Offline: draws `count` new pads, computes u = W·r for every offloaded layer inside the
    /// enclave and returns them sealed, for the host to keep until use.
    pub fn precompute(&mut self, count: usize) -> Result<Vec<SealedPad>, EnclaveError> {
        self.precompute_with_threads(count, self.cfg.threads)
    }

    /// [`precompute`](Self::precompute) on `threads` enclave threads (offline work may use more
    /// threads than the online path; the pads are the same).
    pub fn precompute_with_threads(
        &mut self,
        count: usize,
        threads: usize,
    ) -> Result<Vec<SealedPad>, EnclaveError> {
        let threads = threads.max(1);
        let mut out = Vec::new();
        for _ in 0..count {
            let id = self.next_pad;
            if id > origami_field::pad::MAX_PAD_ID {
                return Err(EnclaveError::PadIdsExhausted);
            }
            self.next_pad += 1;
            let mut sums = Zeroizing::new(vec![[0u32; TRIALS]; self.plan.linears.len()]);
            for (li, (l, _)) in self
                .plan
                .linears
                .iter()
                .zip(&self.offloaded)
                .enumerate()
                .filter(|(_, (_, &o))| o)
            {
                let mut r = vec![0u32; l.shape.in_len()];
                self.pad_key.fill_mask(id, l.layer, &mut r, threads);
                let mut rf: Vec<f64> = r.iter().map(|&v| v as f64).collect();
                // r and u are secret: cleared once used (zeroize: not optimized away).
                r.zeroize();
                let mut u = vec![0f64; l.shape.out_len()];
                match &l.shape {
                    LinearShape::Conv(g) => conv2d(g, &rf, &l.wq, &mut u, threads),
                    LinearShape::Dense { in_f, out_f } => {
                        gemm_nt(1, *in_f, *out_f, &rf, &l.wq, &mut u, threads)
                    }
                }
                // Exact: r < 2^24, |w̃| ≤ 127, K < 2^15.
                let mut uq: Vec<u32> = u.iter().map(|&v| reduce_f64(v)).collect();
                if let Some(probe) = &self.probes[li] {
                    sums[li] = probe.pad_sums(&uq, threads);
                }
                out.push(self.sealer.seal(id, l.layer, &uq));
                self.stats.peak_precompute_bytes = self
                    .stats
                    .peak_precompute_bytes
                    .max(rf.len() * 8 + u.len() * 16 + tile_bytes(&l.shape));
                uq.zeroize();
                u.zeroize();
                rf.zeroize();
            }
            self.ready.push_back(ReadyPad { id, sums });
            self.stats.pads_precomputed += 1;
        }
        Ok(out)
    }

    /// Whether `pad_id` is a precomputed, never used pad of this instance.
    pub fn pad_is_ready(&self, pad_id: u64) -> bool {
        self.ready.iter().any(|r| r.id == pad_id)
    }
}
