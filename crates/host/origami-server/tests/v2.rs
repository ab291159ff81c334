//! The Open Inference Protocol (KServe v2) routes on loopback, with requests shaped as the
//! spec gives them (JSON and the binary tensor data extension): health, server and model
//! metadata, and a sealed BYTES infer whose answer the client opens bit-identical to the
//! quantized reference and to `/v1/infer`; plain tensors, unknown models and malformed binary
//! data are refused with clear errors.

use base64::Engine;
use serde_json::{json, Value};

use origami_enclave::{reference, Placement};
use origami_model::{zoo, Tensor};
use origami_proto::session::{seal_request, Answer, SealedAnswer};
use origami_proto::tensor::WireTensor;
use origami_server::ServerConfig;

mod common;
use common::{plan, policy, same, serve};

type Http = (u16, Vec<(String, String)>, Vec<u8>);

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn read(mut r: ureq::http::Response<ureq::Body>) -> Http {
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    (status, headers, body)
}

fn get(base: &str, path: &str) -> Http {
    read(agent().get(&format!("{base}{path}")).call().unwrap())
}

fn post(base: &str, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> Http {
    let mut req = agent().post(&format!("{base}{path}"));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    read(req.send(&body[..]).unwrap())
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_routes_follow_the_protocol_and_carry_sealed_requests() {
    let plan = plan();
    let placement = Placement::Slalom;
    let server = serve(&plan, placement, ServerConfig::default()).await;
    let base = format!("http://{}", server.addr);
    let p = plan.clone();
    tokio::task::spawn_blocking(move || {
        let plan = p;
        let name = origami_server::v2::url_name(&plan.model.name);

        // Health: 200 with an empty body.
        for path in ["/v2/health/live", "/v2/health/ready"] {
            let (status, _, body) = get(&base, path);
            assert_eq!((status, body.len()), (200, 0), "{path}");
        }
        for path in [
            format!("/v2/models/{name}/ready"),
            format!("/v2/models/{name}/versions/1/ready"),
        ] {
            assert_eq!(get(&base, &path).0, 200, "{path}");
        }

        // Server metadata.
        let (status, _, body) = get(&base, "/v2");
        assert_eq!(status, 200);
        let meta = json_of(&body);
        assert_eq!(meta["name"], "origami");
        assert!(meta["version"].is_string());
        let ext: Vec<&str> = meta["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            ext.contains(&"origami") && ext.contains(&"binary_tensor_data"),
            "{ext:?}"
        );

        // Model metadata: the model's own tensors, with the batch dimension.
        let (status, _, body) = get(&base, &format!("/v2/models/{name}"));
        assert_eq!(status, 200);
        let m = json_of(&body);
        assert_eq!(m["name"], name.as_str());
        assert_eq!(m["platform"], "origami");
        assert_eq!(m["versions"], json!(["1"]));
        let mut want_in = vec![1];
        want_in.extend(&plan.model.input_shape);
        assert_eq!(m["inputs"][0]["shape"], json!(want_in));
        assert_eq!(m["inputs"][0]["datatype"], "FP32");
        let x = zoo::seeded_input(&plan.model, 3);
        let head_end = plan.head_end(placement).unwrap();
        let want = reference(&plan, &x, head_end, 1).unwrap();
        // The answer's own shape, batch axis included (a stock client found [1, 1, 10] here).
        assert_eq!(m["outputs"][0]["shape"], json!(want.shape));
        assert_eq!(m["origami"]["placement"], "slalom");
        assert_eq!(m["origami"]["sealed_input"]["datatype"], "BYTES");
        assert_eq!(get(&base, &format!("/v2/models/{name}/versions/1")).2, body);

        // The evidence under the model's path is the /v1 evidence.
        let ev_v2 = get(&base, &format!("/v2/models/{name}/evidence"));
        assert_eq!(ev_v2.0, 200);
        assert_eq!(json_of(&ev_v2.2), json_of(&get(&base, "/v1/evidence").2));

        // Unknown model and version: 404 with the v2 error shape.
        for path in [
            "/v2/models/nope".to_string(),
            format!("/v2/models/{name}/versions/2"),
        ] {
            let (status, _, body) = get(&base, &path);
            assert_eq!(status, 404, "{path}");
            let e = json_of(&body);
            assert!(e["error"].as_str().unwrap().contains(name.as_str()), "{e}");
            assert_eq!(e["code"], "not_found");
        }

        // A sealed request, as a stock v2 client carries it.
        let ev: origami_proto::evidence::Evidence = serde_json::from_slice(&ev_v2.2).unwrap();
        let binding = origami_proto::evidence::verify(&ev, &policy(&plan)).unwrap();
        let seal = || {
            let bytes = origami_proto::encode(&WireTensor {
                shape: x.shape.iter().map(|&d| d as u32).collect(),
                data: x.data.clone(),
            });
            let (req, pending) = seal_request(&ev.enclave_key, &binding, &bytes).unwrap();
            (origami_proto::encode(&req), pending)
        };
        let open = |pending: origami_proto::session::PendingAnswer, sealed: &[u8]| -> Tensor {
            let a: SealedAnswer = origami_proto::decode(sealed).unwrap();
            match origami_proto::decode::<Answer>(&pending.open(&a).unwrap()).unwrap() {
                Answer::Output(t) => {
                    Tensor::new(t.shape.iter().map(|&d| d as usize).collect(), t.data).unwrap()
                }
                Answer::Failed(f) => panic!("failed: {f:?}"),
            }
        };
        let infer = format!("/v2/models/{name}/infer");

        // 1. Binary tensor data in and out (what tritonclient sends with binary_data=True).
        let (sealed, pending) = seal();
        let head = json!({
            "id": "r1",
            "inputs": [{"name": "sealed_request", "shape": [1], "datatype": "BYTES",
                        "parameters": {"binary_data_size": 4 + sealed.len()}}],
            "outputs": [{"name": "sealed_answer", "parameters": {"binary_data": true}}],
        })
        .to_string();
        let mut body = head.clone().into_bytes();
        body.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        body.extend_from_slice(&sealed);
        let (status, headers, resp) = post(
            &base,
            &infer,
            &[
                ("inference-header-content-length", head.len().to_string()),
                ("content-type", "application/octet-stream".into()),
            ],
            body,
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
        let json_len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("inference-header-content-length"))
            .expect("binary response names its JSON length")
            .1
            .parse()
            .unwrap();
        let rh = json_of(&resp[..json_len]);
        assert_eq!(rh["id"], "r1");
        assert_eq!(rh["model_name"], name.as_str());
        assert_eq!(rh["outputs"][0]["name"], "sealed_answer");
        assert_eq!(rh["outputs"][0]["datatype"], "BYTES");
        let bin = &resp[json_len..];
        assert_eq!(
            rh["outputs"][0]["parameters"]["binary_data_size"],
            json!(bin.len())
        );
        let n = u32::from_le_bytes(bin[..4].try_into().unwrap()) as usize;
        assert_eq!(n + 4, bin.len());
        assert!(
            same(&open(pending, &bin[4..]), &want),
            "binary v2 answer differs"
        );

        // 2. Base64 in JSON, in and out.
        let (sealed, pending) = seal();
        let b64 = base64::engine::general_purpose::STANDARD;
        let req = json!({"inputs": [{"name": "sealed_request", "shape": [1], "datatype": "BYTES",
                                     "data": [b64.encode(&sealed)]}]});
        let (status, _, resp) = post(
            &base,
            &format!("/v2/models/{name}/versions/1/infer"),
            &[],
            req.to_string().into_bytes(),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
        let r = json_of(&resp);
        let ans = b64
            .decode(r["outputs"][0]["data"][0].as_str().unwrap())
            .unwrap();
        assert!(same(&open(pending, &ans), &want), "JSON v2 answer differs");

        // 3. Refused: a plain FP32 tensor, a second input, a replay, lying binary sizes.
        let expect_400 = |headers: &[(&str, String)], body: Vec<u8>, needle: &str| {
            let (status, _, resp) = post(&base, &infer, headers, body);
            let e = json_of(&resp);
            assert_eq!(status, 400, "{e}");
            assert_eq!(e["code"], "bad_request");
            let msg = e["error"].as_str().unwrap();
            assert!(msg.contains(needle), "{msg}");
        };
        let plain = json!({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                       "data": x.data}]});
        expect_400(
            &[],
            plain.to_string().into_bytes(),
            "plain tensors are refused",
        );
        let two = json!({"inputs": [req["inputs"][0], req["inputs"][0]]});
        expect_400(&[], two.to_string().into_bytes(), "only a sealed request");
        expect_400(&[], req.to_string().into_bytes(), "replayed");
        let short = json!({"inputs": [{"name": "sealed_request", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": 100}}]})
        .to_string();
        let mut body = short.clone().into_bytes();
        body.extend_from_slice(&[0u8; 10]);
        expect_400(
            &[("inference-header-content-length", short.len().to_string())],
            body.clone(),
            "larger than the binary data",
        );
        expect_400(
            &[("inference-header-content-length", "999999".into())],
            body,
            "no larger than the body",
        );
        let mut lying = head.clone().into_bytes();
        lying.extend_from_slice(&(sealed.len() as u32 + 1).to_le_bytes());
        lying.extend_from_slice(&sealed);
        expect_400(
            &[("inference-header-content-length", head.len().to_string())],
            lying,
            "the BYTES element says",
        );
    })
    .await
    .unwrap();
    server.shutdown().await.unwrap();
}
