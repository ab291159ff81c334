//! Helpers shared by the server's tests: the built-in model's plan, a policy that allows the
//! simulated enclave, bitwise tensor equality, a server on a free loopback port.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;

use origami_enclave::service::{self_code_id, EnclaveService};
use origami_enclave::{CoreConfig, Placement, Plan, QuantConfig};
use origami_model::{zoo, Tensor};
use origami_proto::evidence::{hex, AllowedMeasurement, Policy};
use origami_server::{cpu_accelerator, start, ServerConfig};

pub fn plan() -> Arc<Plan> {
    let model = zoo::fashion();
    let calib: Vec<Tensor> = (0..4).map(|s| zoo::seeded_input(&model, 100 + s)).collect();
    Arc::new(Plan::build(&model, &calib, QuantConfig::default()).unwrap())
}

pub fn policy(plan: &Plan) -> Policy {
    Policy {
        allow_simulated: true,
        measurements: vec![AllowedMeasurement {
            platform: "simulated".into(),
            code_id: hex(&self_code_id().unwrap()),
            model_hash: hex(&plan.model.hash()),
            min_split: None,
        }],
        placements: vec!["slalom".into()],
        ..Policy::default()
    }
}

pub fn same(a: &Tensor, b: &Tensor) -> bool {
    a.shape == b.shape
        && a.data
            .iter()
            .zip(&b.data)
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

/// A server on a free loopback port with an in-process simulated enclave.
pub async fn serve(
    plan: &Arc<Plan>,
    placement: Placement,
    cfg: ServerConfig,
) -> origami_server::Running {
    let core = CoreConfig {
        placement,
        verify: true,
        threads: 1,
    };
    let service = EnclaveService::simulated(plan.clone(), core, self_code_id().unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start(
        listener,
        Box::new(service),
        plan.clone(),
        placement,
        cpu_accelerator(),
        cfg,
        None,
    )
    .await
    .unwrap()
}
