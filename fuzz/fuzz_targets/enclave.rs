//! The enclave process under an adversarial host: the input is the byte stream the host sends
//! (frames of `ToEnclave` messages, or garbage), served by `process::serve` over one in-memory
//! connection to a fresh `EnclaveService` (slalom placement, two pads precomputed). When the
//! first byte is odd, an authentic sealed request is begun first, so later messages reach the
//! request's states (offloads, replies, park, finish). No input may panic, and afterwards the
//! service still serves: nothing in flight, and an honest precompute succeeds.
#![no_main]
use std::io::{Cursor, Read, Write};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use origami_enclave::service::EnclaveService;
use origami_enclave::{CoreConfig, Placement, Plan};
use origami_proto::evidence::{Attester, SimulatedPlatform};
use origami_proto::frame::write_frame;
use origami_proto::session::seal_request;
use origami_proto::tensor::WireTensor;
use origami_proto::wire::ToEnclave;

fn plan() -> Arc<Plan> {
    static PLAN: OnceLock<Arc<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let m = origami_model::zoo::fashion();
        Arc::new(Plan::served(m, Placement::Slalom, 1).unwrap())
    })
    .clone()
}

struct Conn {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let cfg = CoreConfig {
        placement: Placement::Slalom,
        verify: true,
        threads: 1,
    };
    let platform = SimulatedPlatform::new([7; 32]).unwrap();
    let _ = platform.code_id();
    let mut service = EnclaveService::new(plan(), cfg, Box::new(platform)).unwrap();
    service.core_mut().precompute(2).unwrap();
    let mut stream = Vec::new();
    if data.first().is_some_and(|b| b & 1 == 1) {
        let ev = service.evidence().clone();
        let x = origami_model::zoo::seeded_input(&plan().model, 1);
        let bytes = origami_proto::encode(&WireTensor {
            shape: x.shape.iter().map(|&d| d as u32).collect(),
            data: x.data,
        });
        let (req, _) = seal_request(&ev.enclave_key, &ev.digest(), &bytes).unwrap();
        let begin = ToEnclave::Begin {
            request: req,
            pad: None,
        };
        write_frame(&mut stream, &origami_proto::encode(&begin), 1 << 20).unwrap();
    }
    stream.extend_from_slice(data.get(1..).unwrap_or_default());
    let mut conn = Conn {
        input: Cursor::new(stream),
        output: Vec::new(),
    };
    let _ = origami_enclave::process::serve(&mut conn, &mut service, 1 << 20);
    // The connection is over: nothing is left in flight, and the service goes on.
    assert!(service.park().is_err());
    service.core_mut().precompute(1).unwrap();
});
