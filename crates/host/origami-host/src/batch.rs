//! The one batch driver, for the server's worker and for `local::Engine`: each job's head runs
//! through the enclave (one at a time: the enclave is one thread) and parks at its handoff;
//! then the accelerator runs ONE tail for all parked jobs (stacked along the batch axis), and
//! the enclave finishes each with its own output. Jobs without a tail (the enclave and slalom
//! placements) are answered as soon as their head is done.
//!
//! The driver owns the order of the protocol (begin → offloads → park → one tail → finish);
//! the caller owns what a job is, how it begins (pad choice, waiting, retries) and how its
//! result is delivered and counted.

use std::time::{Duration, Instant};

use origami_accel::Accelerator;
use origami_model::Tensor;
use origami_plan::Handoff;

use crate::{Headed, HostError};

/// What the batch driver needs from its caller.
pub trait BatchHost {
    /// One unit of work (a request with its reply channel, an index into a batch).
    type Job;
    /// What a finished job yields (a sealed answer, an output tensor).
    type Answer;
    /// Why a job failed, in the caller's terms.
    type Fail;

    /// Begins `job` in the enclave and serves its offloads until the enclave answers or hands
    /// off (usually with [`crate::drive_head`]).
    fn head(&mut self, job: &Self::Job) -> Result<Headed<Self::Answer>, Self::Fail>;
    /// Parks the request whose head just handed off; returns its ticket.
    fn park(&mut self) -> Result<u64, Self::Fail>;
    /// The accelerator the tails run on.
    fn accelerator(&mut self) -> &mut dyn Accelerator;
    /// Finishes the parked request `ticket` with its tail output.
    fn finish(&mut self, ticket: u64, output: Tensor) -> Result<Self::Answer, Self::Fail>;
    /// Delivers one job's result.
    fn answer(&mut self, job: Self::Job, result: Result<Self::Answer, Self::Fail>);
    /// The tail call for `jobs` failed (the accelerator's fault): fails every one of them.
    /// Their parked requests are left to the enclave's bound (`MAX_PARKED`), never finished.
    fn tails_failed(&mut self, jobs: Vec<Self::Job>, error: HostError);
    /// Called after every tail call with its size and how long the accelerator took.
    fn tail_batch(&mut self, _size: usize, _took: Duration) {}
}

/// Runs `jobs` as one batch. With `batch_tails` false every tail runs on its own, right after
/// its head (the same protocol, a tail batch of one).
pub fn run_batch<H: BatchHost>(
    host: &mut H,
    jobs: impl IntoIterator<Item = H::Job>,
    batch_tails: bool,
) {
    let mut parked: Vec<(H::Job, u64, Handoff)> = Vec::new();
    for job in jobs {
        match host.head(&job) {
            Ok(Headed::Done(a)) => host.answer(job, Ok(a)),
            Ok(Headed::Handoff(h)) => match host.park() {
                Ok(ticket) => {
                    parked.push((job, ticket, h));
                    if !batch_tails {
                        run_tails(host, std::mem::take(&mut parked));
                    }
                }
                Err(f) => host.answer(job, Err(f)),
            },
            Err(f) => host.answer(job, Err(f)),
        }
    }
    if !parked.is_empty() {
        run_tails(host, parked);
    }
}

/// One accelerator call for the tails of `parked`; each output goes back to the enclave with
/// its own ticket.
fn run_tails<H: BatchHost>(host: &mut H, parked: Vec<(H::Job, u64, Handoff)>) {
    let handoffs: Vec<&Handoff> = parked.iter().map(|p| &p.2).collect();
    let t = Instant::now();
    let outs = crate::run_tails(host.accelerator(), &handoffs);
    host.tail_batch(parked.len(), t.elapsed());
    match outs {
        Ok(outs) => {
            for ((job, ticket, _), out) in parked.into_iter().zip(outs) {
                let r = host.finish(ticket, out);
                host.answer(job, r);
            }
        }
        Err(e) => host.tails_failed(parked.into_iter().map(|p| p.0).collect(), e),
    }
}

#[cfg(test)]
mod tests {
    //! The driver's protocol order, with a host that records its calls and an accelerator
    //! whose tail adds one to its input (the real cores are driven by it in
    //! `tests/placements.rs` and the server's tests).
    use std::sync::Arc;

    use origami_accel::{AccelError, FieldLayer};
    use origami_model::{Model, NodeId, Tensor, ValueId};

    use super::*;

    /// Tail: y = x + 1 for the one value handed off; `fail` makes the tail call fail.
    struct PlusOne {
        fail: bool,
        calls: usize,
    }

    impl Accelerator for PlusOne {
        fn name(&self) -> String {
            "plus-one".into()
        }
        fn prepare(&mut self, _: Arc<Model>, _: &[FieldLayer]) -> Result<(), AccelError> {
            Ok(())
        }
        fn field_linear(&mut self, _: u16, _: &[u32]) -> Result<Vec<u32>, AccelError> {
            Err(AccelError::BadInput("no field layers here".into()))
        }
        fn run_tail(
            &mut self,
            _start: NodeId,
            values: Vec<(ValueId, Tensor)>,
        ) -> Result<Tensor, AccelError> {
            self.calls += 1;
            if self.fail {
                return Err(AccelError::BadInput("tail fault".into()));
            }
            let (_, mut t) = values.into_iter().next().expect("one value");
            t.data.iter_mut().for_each(|v| *v += 1.0);
            Ok(t)
        }
        fn synchronize(&mut self) -> Result<(), AccelError> {
            Ok(())
        }
    }

    /// Job i: hands off [i] when i is even, answers 100 + i at once when odd; job 3 fails its
    /// head.
    struct Recorder {
        accel: PlusOne,
        log: Vec<String>,
        answers: Vec<(u32, Result<f32, String>)>,
        next_ticket: u64,
    }

    impl BatchHost for Recorder {
        type Job = u32;
        type Answer = f32;
        type Fail = String;
        fn head(&mut self, &i: &u32) -> Result<Headed<f32>, String> {
            self.log.push(format!("head {i}"));
            match i {
                3 => Err("head failed".into()),
                i if i % 2 == 1 => Ok(Headed::Done(100.0 + i as f32)),
                i => Ok(Headed::Handoff(Handoff {
                    start: NodeId::new(1),
                    values: vec![(
                        ValueId::new(1),
                        Tensor::new(vec![1, 1], vec![i as f32]).unwrap(),
                    )],
                })),
            }
        }
        fn park(&mut self) -> Result<u64, String> {
            self.next_ticket += 1;
            self.log.push(format!("park {}", self.next_ticket));
            Ok(self.next_ticket)
        }
        fn accelerator(&mut self) -> &mut dyn Accelerator {
            self.log.push("tail".into());
            &mut self.accel
        }
        fn finish(&mut self, ticket: u64, out: Tensor) -> Result<f32, String> {
            self.log.push(format!("finish {ticket}"));
            Ok(out.data[0])
        }
        fn answer(&mut self, job: u32, r: Result<f32, String>) {
            self.answers.push((job, r));
        }
        fn tails_failed(&mut self, jobs: Vec<u32>, e: HostError) {
            for j in jobs {
                self.answers.push((j, Err(format!("tails: {e}"))));
            }
        }
    }

    fn recorder(fail: bool) -> Recorder {
        Recorder {
            accel: PlusOne { fail, calls: 0 },
            log: Vec::new(),
            answers: Vec::new(),
            next_ticket: 0,
        }
    }

    #[test]
    fn heads_park_then_one_tail_then_finish_in_order() {
        let mut h = recorder(false);
        run_batch(&mut h, 0..5, true);
        assert_eq!(
            h.log,
            [
                "head 0", "park 1", "head 1", "head 2", "park 2", "head 3", "head 4", "park 3",
                "tail", "finish 1", "finish 2", "finish 3"
            ]
        );
        assert_eq!(h.accel.calls, 1, "one tail call for the batch");
        let mut got = h.answers.clone();
        got.sort_by_key(|a| a.0);
        assert_eq!(
            got,
            [
                (0, Ok(1.0)),
                (1, Ok(101.0)),
                (2, Ok(3.0)),
                (3, Err("head failed".into())),
                (4, Ok(5.0)),
            ]
        );
    }

    #[test]
    fn unbatched_tails_run_right_after_each_head() {
        let mut h = recorder(false);
        run_batch(&mut h, [0, 2], false);
        assert_eq!(
            h.log,
            ["head 0", "park 1", "tail", "finish 1", "head 2", "park 2", "tail", "finish 2"]
        );
        assert_eq!(h.accel.calls, 2);
        assert_eq!(h.answers, [(0, Ok(1.0)), (2, Ok(3.0))]);
    }

    #[test]
    fn a_failed_tail_fails_every_parked_job_and_finishes_none() {
        let mut h = recorder(true);
        run_batch(&mut h, 0..3, true);
        assert!(
            !h.log.iter().any(|l| l.starts_with("finish")),
            "{:?}",
            h.log
        );
        let mut got = h.answers.clone();
        got.sort_by_key(|a| a.0);
        assert_eq!(got[1], (1, Ok(101.0)), "a job without a tail is unaffected");
        for (j, r) in [&got[0], &got[2]] {
            assert!(
                matches!(r, Err(e) if e.starts_with("tails:")),
                "job {j}: {r:?}"
            );
        }
    }
}
