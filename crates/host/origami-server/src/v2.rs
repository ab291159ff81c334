//! The Open Inference Protocol (KServe v2) routes, beside `/v1/…`:
//!
//! - `GET /v2` — server metadata; extensions `binary_tensor_data` and `origami` (the sealed
//!   request scheme, described under the extra key `origami`);
//! - `GET /v2/health/live`, `GET /v2/health/ready` — 200 or 400 with an empty body (ready: the
//!   enclave worker runs and a pad is ready, or the placement needs none);
//! - `GET /v2/models/{name}[/versions/1]` — model metadata: the model's own input and output
//!   (names, `FP32`, shapes with the batch dimension) inside the seal, platform `origami`, and
//!   under `origami` the placement, split, what the host sees and how to call it;
//! - `GET /v2/models/{name}[/versions/1]/ready`;
//! - `GET /v2/models/{name}[/versions/1]/evidence` — the attestation evidence (as `/v1/evidence`);
//! - `POST /v2/models/{name}[/versions/1]/infer` — one `BYTES` input `sealed_request` of shape
//!   `[1]` holding a postcard `SealedRequest`, as binary data (the binary tensor data extension:
//!   `Inference-Header-Content-Length`, each element a 4-byte little-endian length and its
//!   bytes) or as a base64 string in JSON; the answer is one `BYTES` output `sealed_answer` the
//!   same way (binary when the request asks for binary outputs, else base64 in JSON). Plain
//!   tensors are refused: the host must never see an input.
//!
//! Errors are `{"error": message, "code": code}` with the status of the `/v1` route (the spec
//! asks for `error`; `code` is what clients match on, as for `/v1`).

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use origami_proto::session::SealedRequest;

use crate::{read_body, run_job, take_slot, AppState, ErrorCode, Failure};

/// The name of the sealed input and output tensors.
pub const SEALED_INPUT: &str = "sealed_request";
pub const SEALED_OUTPUT: &str = "sealed_answer";
/// The only model version served.
pub const VERSION: &str = "1";
/// Header of the binary tensor data extension: the length of the JSON part of the body.
const HEADER_LEN: &str = "inference-header-content-length";

/// What the v2 routes say about the served model (fixed at start).
pub(crate) struct ModelInfo {
    /// The name in `/v2/models/{name}` (the model's, reduced to `[A-Za-z0-9_.-]`).
    pub(crate) name: String,
    pub(crate) input_shape: Vec<usize>,
    pub(crate) output_shape: Vec<usize>,
}

/// A model's name as it may appear in a URL path segment.
pub fn url_name(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if n.is_empty() {
        "model".into()
    } else {
        n
    }
}

pub(crate) fn routes() -> Router<AppState> {
    let m = "/v2/models/{name}";
    let v = "/v2/models/{name}/versions/{version}";
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(server_ready))
        .route(m, get(model_metadata))
        .route(v, get(model_metadata_v))
        .route(&format!("{m}/ready"), get(model_ready))
        .route(&format!("{v}/ready"), get(model_ready_v))
        .route(&format!("{m}/evidence"), get(model_evidence))
        .route(&format!("{v}/evidence"), get(model_evidence_v))
        .route(&format!("{m}/infer"), post(infer))
        .route(&format!("{v}/infer"), post(infer_v))
}

fn v2_error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = json!({ "error": message, "code": code.as_str() });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

fn fail(f: Failure) -> Response {
    v2_error(f.status, f.code, &f.message)
}

fn json_response(v: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{v}\n"),
    )
        .into_response()
}

fn not_found(message: String) -> Failure {
    Failure {
        status: StatusCode::NOT_FOUND,
        code: ErrorCode::NotFound,
        message,
    }
}

/// 404 unless `name` (and `version`, if given) is the served model.
fn check_model(s: &AppState, name: &str, version: Option<&str>) -> Result<(), Failure> {
    if name != s.v2.name {
        return Err(not_found(format!(
            "unknown model '{name}': this server serves '{}'",
            s.v2.name
        )));
    }
    if let Some(v) = version.filter(|v| *v != VERSION) {
        return Err(not_found(format!(
            "model '{name}' has no version '{v}': it has version {VERSION}"
        )));
    }
    Ok(())
}

fn ready(s: &AppState) -> bool {
    s.worker_up.load(Ordering::Relaxed)
        && (!s.needs_pads || s.metrics.pads_ready.load(Ordering::Relaxed) > 0)
}

async fn server_metadata(State(s): State<AppState>) -> Response {
    json_response(&json!({
        "name": "origami",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "origami"],
        "origami": {
            "scheme": "origami-sealed-v1",
            "about": "inputs and outputs travel sealed to the attested enclave (docs/SERVING.md): \
                      fetch the evidence, verify it, send one BYTES tensor 'sealed_request'",
            "models": [s.v2.name.clone()],
        },
    }))
}

async fn server_ready(State(s): State<AppState>) -> StatusCode {
    if ready(&s) {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

async fn model_metadata(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    metadata(&s, &name, None)
}

async fn model_metadata_v(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    metadata(&s, &name, Some(&version))
}

fn metadata(s: &AppState, name: &str, version: Option<&str>) -> Response {
    if let Err(f) = check_model(s, name, version) {
        return fail(f);
    }
    let ev = s.evidence.read().unwrap_or_else(|p| p.into_inner()).clone();
    let with_batch = |shape: &[usize]| -> Vec<usize> {
        std::iter::once(1).chain(shape.iter().copied()).collect()
    };
    let m = &ev.measurement;
    json_response(&json!({
        "name": s.v2.name,
        "versions": [VERSION],
        "platform": "origami",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": with_batch(&s.v2.input_shape)}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": with_batch(&s.v2.output_shape)}],
        "origami": {
            "placement": m.placement.mode(),
            "split": m.placement.split(),
            "verify": m.verify,
            "host_sees": ev.host_sees,
            "platform": ev.platform.id(),
            "sealed_input": {"name": SEALED_INPUT, "datatype": "BYTES", "shape": [1]},
            "sealed_output": {"name": SEALED_OUTPUT, "datatype": "BYTES", "shape": [1]},
            "evidence": format!("/v2/models/{}/evidence", s.v2.name),
        },
    }))
}

async fn model_ready(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    model_ready_in(&s, &name, None)
}

async fn model_ready_v(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    model_ready_in(&s, &name, Some(&version))
}

fn model_ready_in(s: &AppState, name: &str, version: Option<&str>) -> Response {
    match check_model(s, name, version) {
        Err(f) => fail(f),
        Ok(()) if ready(s) => StatusCode::OK.into_response(),
        Ok(()) => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn model_evidence(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    match check_model(&s, &name, None) {
        Err(f) => fail(f),
        Ok(()) => crate::get_evidence(State(s)).await,
    }
}

async fn model_evidence_v(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    match check_model(&s, &name, Some(&version)) {
        Err(f) => fail(f),
        Ok(()) => crate::get_evidence(State(s)).await,
    }
}

async fn infer(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_in(s, name, None, headers, body).await
}

async fn infer_v(
    State(s): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    infer_in(s, name, Some(version), headers, body).await
}

async fn infer_in(
    s: AppState,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(f) = check_model(&s, &name, version.as_deref()) {
        return fail(f);
    }
    s.metrics.received.fetch_add(1, Ordering::Relaxed);
    let Some(_slot) = take_slot(&s) else {
        return v2_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::QueueFull,
            "too many requests in flight, retry later",
        );
    };
    // Base64 in JSON makes the sealed request 4/3 larger; the JSON around it is small.
    let limit = s.max_body.saturating_mul(4) / 3 + (64 << 10);
    let body = match read_body(&s, &headers, body, limit).await {
        Ok(b) => b,
        Err(f) => return fail(f),
    };
    let parsed = match parse_request(&headers, &body) {
        Ok(p) => p,
        Err(msg) => {
            s.metrics.bad_request.fetch_add(1, Ordering::Relaxed);
            return v2_error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &msg);
        }
    };
    let req: SealedRequest = match origami_proto::decode(&parsed.sealed) {
        Ok(r) => r,
        Err(e) => {
            s.metrics.bad_request.fetch_add(1, Ordering::Relaxed);
            return v2_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                &format!("request rejected: {e}"),
            );
        }
    };
    let answer = match run_job(&s, req).await {
        Ok(a) => origami_proto::encode(&a),
        Err(f) => return fail(f),
    };
    respond(&s.v2.name, parsed.id, parsed.binary_output, &answer)
}

/// What the infer body carried.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) id: Option<String>,
    pub(crate) sealed: Vec<u8>,
    pub(crate) binary_output: bool,
}

/// Parses a v2 infer request body: JSON, or JSON then binary data (the header gives the JSON
/// part's length). Errors are messages for the client (about the request's form only).
pub(crate) fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, String> {
    let json_len = match headers.get(HEADER_LEN) {
        None => body.len(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok())
            .filter(|&n| n <= body.len())
            .ok_or_else(|| {
                format!(
                    "{HEADER_LEN} must be a number no larger than the body ({} bytes)",
                    body.len()
                )
            })?,
    };
    let (head, mut binary) = body.split_at(json_len);
    let req: Value =
        serde_json::from_slice(head).map_err(|e| format!("the request is not v2 JSON: {e}"))?;
    let id = match req.get("id") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("\"id\" must be a string".into()),
    };
    let inputs = req
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or("the request has no \"inputs\" array")?;
    let refuse_plain = || {
        format!(
            "this server takes only a sealed request: one BYTES input '{SEALED_INPUT}' of shape [1] \
             (the input sealed to the attested enclave, docs/SERVING.md); plain tensors are refused, \
             the host must never see an input"
        )
    };
    let [input] = inputs.as_slice() else {
        return Err(refuse_plain());
    };
    let field = |k: &str| input.get(k);
    if field("name").and_then(Value::as_str) != Some(SEALED_INPUT)
        || field("datatype").and_then(Value::as_str) != Some("BYTES")
    {
        return Err(refuse_plain());
    }
    let shape: Option<Vec<u64>> = field("shape")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(Value::as_u64).collect());
    if shape.is_none_or(|s| s.iter().product::<u64>() != 1) {
        return Err(format!(
            "'{SEALED_INPUT}' must hold exactly one element (shape [1])"
        ));
    }
    let binary_size = field("parameters").and_then(|p| p.get("binary_data_size"));
    let sealed = match (binary_size, field("data")) {
        (Some(n), None) => {
            let n = n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n <= binary.len())
                .ok_or("binary_data_size is larger than the binary data sent")?;
            if n != binary.len() {
                return Err("binary data beyond the one input's binary_data_size".into());
            }
            // One BYTES element: a 4-byte little-endian length, then that many bytes.
            let Some((len, rest)) = binary.split_first_chunk::<4>() else {
                return Err("a BYTES element needs its 4-byte length".into());
            };
            let len = u32::from_le_bytes(*len) as usize;
            if len != rest.len() {
                return Err(format!(
                    "the BYTES element says {len} bytes, the binary data holds {}",
                    rest.len()
                ));
            }
            binary = &[];
            rest.to_vec()
        }
        (None, Some(data)) => {
            let s = match data {
                Value::String(s) => Some(s),
                Value::Array(a) => match a.as_slice() {
                    [Value::String(s)] => Some(s),
                    [Value::Array(inner)] => match inner.as_slice() {
                        [Value::String(s)] => Some(s),
                        _ => None,
                    },
                    _ => None,
                },
                _ => None,
            }
            .ok_or_else(|| format!("'{SEALED_INPUT}' data must be one base64 string"))?;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("'{SEALED_INPUT}' is not base64: {e}"))?
        }
        (Some(_), Some(_)) => return Err("an input has both data and binary_data_size".into()),
        (None, None) => return Err(format!("'{SEALED_INPUT}' has no data")),
    };
    if !binary.is_empty() {
        return Err("binary data sent but no input has binary_data_size".into());
    }
    // Binary output if asked, per output or for the whole request.
    let binary_param =
        |v: Option<&Value>, key: &str| v.and_then(|p| p.get(key)).and_then(Value::as_bool);
    let mut binary_output =
        binary_param(req.get("parameters"), "binary_data_output").unwrap_or(false);
    if let Some(outputs) = req.get("outputs").and_then(Value::as_array) {
        for o in outputs {
            let name = o.get("name").and_then(Value::as_str).unwrap_or_default();
            if name != SEALED_OUTPUT {
                return Err(format!(
                    "unknown output '{name}': the only output is '{SEALED_OUTPUT}' (BYTES)"
                ));
            }
            if let Some(b) = binary_param(o.get("parameters"), "binary_data") {
                binary_output = b;
            }
        }
    }
    Ok(Parsed {
        id,
        sealed,
        binary_output,
    })
}

/// The v2 infer response holding the sealed answer.
fn respond(model: &str, id: Option<String>, binary: bool, answer: &[u8]) -> Response {
    let mut out = json!({"name": SEALED_OUTPUT, "datatype": "BYTES", "shape": [1]});
    let mut head = json!({
        "model_name": model,
        "model_version": VERSION,
        "outputs": [],
    });
    if let Some(id) = id {
        head["id"] = Value::String(id);
    }
    if binary {
        out["parameters"] = json!({ "binary_data_size": 4 + answer.len() });
        head["outputs"] = json!([out]);
        let head = head.to_string();
        let mut body = Vec::with_capacity(head.len() + 4 + answer.len());
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(&(answer.len() as u32).to_le_bytes());
        body.extend_from_slice(answer);
        let mut r = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
        r.headers_mut()
            .insert(HEADER_LEN, HeaderValue::from(head.len()));
        r
    } else {
        out["data"] = json!([base64::engine::general_purpose::STANDARD.encode(answer)]);
        head["outputs"] = json!([out]);
        json_response(&head)
    }
}
