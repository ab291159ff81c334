//! Times every enclave step of one origami request on VGG-16 (224×224): where the enclave's
//! time goes. `cargo run --release -p origami-host --example steps [split]`
use std::sync::Arc;
use std::time::Instant;

use origami_accel::{Accelerator, CpuAccelerator};
use origami_enclave::{CoreConfig, EnclaveCore, Placement, Plan, QuantConfig, Reply, Step};
use origami_host::{field_layers, PadStore};
use origami_model::zoo;

fn main() {
    let split: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let m = zoo::vgg16(224);
    let x = zoo::seeded_input(&m, 1);
    let plan = Arc::new(Plan::build(&m, std::slice::from_ref(&x), QuantConfig::default()).unwrap());
    let cfg = CoreConfig {
        placement: Placement::Origami { split },
        verify: false,
        threads: 1,
    };
    let mut core = EnclaveCore::new(plan.clone(), cfg).unwrap();
    let mut acc = CpuAccelerator::new();
    acc.prepare(plan.model.clone(), &field_layers(&plan, core.head_end()))
        .unwrap();
    let mut store = PadStore::default();
    store.insert_all(core.precompute(3).unwrap());
    for round in 0..3 {
        let t = Instant::now();
        let mut step = core.begin(x.clone()).unwrap();
        println!(
            "round {round}: begin {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        loop {
            match step {
                Step::Offload(o) => {
                    let t = Instant::now();
                    let result = acc.field_linear(o.layer, &o.blinded).unwrap();
                    let ta = t.elapsed().as_secs_f64() * 1e3;
                    let sealed_u = store.take(o.pad_id, o.layer).unwrap();
                    let t = Instant::now();
                    step = core.resume(Reply::Linear { result, sealed_u }).unwrap();
                    println!(
                        "  layer {}: accelerator {ta:.2} ms, enclave resume {:.2} ms",
                        o.layer,
                        t.elapsed().as_secs_f64() * 1e3
                    );
                }
                Step::Handoff(h) => {
                    let t = Instant::now();
                    let out = acc.run_tail(h.start, h.values).unwrap();
                    println!("  tail {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
                    step = core.resume(Reply::Tail(out)).unwrap();
                }
                Step::Done(_) => break,
            }
        }
    }
}
