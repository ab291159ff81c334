//! A host attaching an enclave started for another model, quantization plan or placement is
//! refused at attach, by cause, before any pad is made or request served: with another plan the
//! enclave's fixed-point bounds and sealed pads would not match the host's, and the failure
//! would otherwise surface later as saturation or pad errors on client requests.

use std::sync::Arc;

use origami_enclave::service::{self_code_id, EnclaveService};
use origami_enclave::{CoreConfig, Placement, Plan, QuantConfig};
use origami_model::{zoo, Model, Tensor};
use origami_server::{cpu_accelerator, start, Mismatch, ServerConfig, ServerError};

/// A plan calibrated on seeded inputs scaled by `gain`.
fn plan(model: &Model, gain: f32, cfg: QuantConfig) -> Arc<Plan> {
    let calib: Vec<Tensor> = (0..4)
        .map(|s| {
            let mut x = zoo::seeded_input(model, 100 + s);
            x.data.iter_mut().for_each(|v| *v *= gain);
            x
        })
        .collect();
    Arc::new(Plan::build(model, &calib, cfg).unwrap())
}

/// Starts a server whose host planned `host` at `host_placement`, attached to an enclave built
/// for `enclave` at `enclave_placement`.
async fn attach(
    host: &Arc<Plan>,
    host_placement: Placement,
    enclave: &Arc<Plan>,
    enclave_placement: Placement,
) -> Result<origami_server::Running, ServerError> {
    let core = CoreConfig {
        placement: enclave_placement,
        verify: true,
        threads: 1,
    };
    let service =
        EnclaveService::simulated(enclave.clone(), core, self_code_id().unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start(
        listener,
        Box::new(service),
        host.clone(),
        host_placement,
        cpu_accelerator(),
        ServerConfig::default(),
        None,
    )
    .await
}

fn mismatch(r: Result<origami_server::Running, ServerError>) -> Mismatch {
    match r {
        Err(ServerError::Mismatch(m)) => m,
        Err(e) => panic!("expected a mismatch at attach, got {e}"),
        Ok(_) => panic!("expected a mismatch at attach, the server started"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enclave_for_another_plan_model_or_placement_is_refused_at_attach() {
    let model = zoo::fashion();
    let host = plan(&model, 1.0, QuantConfig::default());
    // Same model, brighter calibration images: the same model hash, other activation scales.
    let recalibrated = plan(&model, 16.0, QuantConfig::default());
    assert_eq!(recalibrated.model_hash, host.model_hash);
    assert_ne!(recalibrated.hash, host.hash);
    // Same model and calibration, other fixed-point settings.
    let wider = plan(
        &model,
        1.0,
        QuantConfig {
            act_bits: 9,
            ..QuantConfig::default()
        },
    );
    assert_ne!(wider.hash, host.hash);
    let other_model = plan(&zoo::small(), 1.0, QuantConfig::default());

    let slalom = Placement::Slalom;
    for enclave in [&recalibrated, &wider] {
        let r = attach(&host, slalom, enclave, slalom).await;
        assert_eq!(mismatch(r), Mismatch::Plan);
    }
    let r = attach(&host, slalom, &other_model, slalom).await;
    assert_eq!(mismatch(r), Mismatch::Model);
    let r = attach(&host, slalom, &host, Placement::Origami { split: 2 }).await;
    assert_eq!(mismatch(r), Mismatch::Placement);
    let r = attach(
        &host,
        Placement::Origami { split: 3 },
        &host,
        Placement::Origami { split: 2 },
    )
    .await;
    assert_eq!(mismatch(r), Mismatch::Placement);

    // The matching enclave attaches, and the evidence names the plan it binds pads to.
    let running = attach(&host, slalom, &host, slalom).await.unwrap();
    let addr = running.addr;
    let ev: serde_json::Value = tokio::task::spawn_blocking(move || {
        let body = ureq::get(&format!("http://{addr}/v1/evidence"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap()
    })
    .await
    .unwrap();
    let plan_hash: Vec<u8> =
        serde_json::from_value(ev["measurement"]["plan_hash"].clone()).unwrap();
    assert_eq!(plan_hash, host.hash);
    running.shutdown().await.unwrap();
}
