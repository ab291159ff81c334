//! `origami_client._native`: the Rust SDK (`origami-client`) for Python. The package
//! `origami_client` (python/origami_client) re-exports it; the stubs beside it give the types.
//!
//! - `Client(url, policy)` fetches and verifies the evidence (policy: a TOML file's path or a
//!   dict of the same keys); `Client.infer(x)` seals a NumPy array to the enclave and returns the
//!   answer as a NumPy array. The GIL is released while the request is on the network, and one
//!   client may be shared by threads.
//! - Every SDK error is its own exception class under `OrigamiError`, with the cause as
//!   attributes (`code`, `status`, `failure`, …) so callers never match on wording.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use numpy::ndarray::ArrayD;
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use origami_client::ClientError;
use origami_model::Tensor;
use origami_proto::evidence::{hex, Evidence as RustEvidence, Policy};
use origami_proto::ProtoError;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyBytes, PyDict, PyString};
use zeroize::Zeroize;

create_exception!(
    origami_client,
    OrigamiError,
    PyException,
    "Base class of every error the Origami client raises."
);
create_exception!(
    origami_client,
    PolicyError,
    OrigamiError,
    "The policy could not be read: a missing file, bad TOML, an unknown key or a wrong type."
);
create_exception!(
    origami_client,
    EvidenceRejected,
    OrigamiError,
    "The server's evidence does not pass the policy (or is forged). `code` names the cause."
);
create_exception!(
    origami_client,
    ServerError,
    OrigamiError,
    "The server refused the request or could not be reached: `status` (0 when no response \
     arrived), `code` (the server's machine-readable code, or None), `url`."
);
create_exception!(
    origami_client,
    EnclaveFailed,
    OrigamiError,
    "The enclave opened the request and could not answer; the cause came sealed to this \
     client (`failure`: bad_input, saturation, accelerator_misbehaved, pad_rejected, \
     host_misbehaved, internal)."
);
create_exception!(
    origami_client,
    AnswerRejected,
    OrigamiError,
    "The answer was not sealed by the attested enclave for this request (tampered, replayed or \
     malformed): nothing of it is used."
);
create_exception!(
    origami_client,
    ReattestedError,
    OrigamiError,
    "The client re-attested to the same measurement with a new session key; the input was not \
     resent: call infer again to retry it."
);
create_exception!(
    origami_client,
    EnclaveRestarted,
    ReattestedError,
    "The server's enclave restarted; the client re-attested (same measurement): retry."
);
create_exception!(
    origami_client,
    KeyRotated,
    ReattestedError,
    "The server's enclave rotated its session key; the client re-attested: retry."
);
create_exception!(
    origami_client,
    MeasurementChanged,
    OrigamiError,
    "After a restart the server's enclave claims another measurement (`was`, `now`): refused, \
     nothing was sent. Connect a new Client to accept it under your policy."
);

/// A Python exception of type `T` with `msg` and attributes.
fn raise<T: pyo3::PyTypeInfo>(
    py: Python<'_>,
    msg: String,
    attrs: &[(&str, Option<Py<PyAny>>)],
) -> PyErr {
    let err = PyErr::new::<T, _>(msg);
    let value = err.value(py);
    for (name, v) in attrs {
        // Setting an attribute on a fresh exception instance does not fail.
        let _ = value.setattr(*name, v.as_ref().map(|v| v.bind(py)));
    }
    err
}

fn text(py: Python<'_>, s: &str) -> Option<Py<PyAny>> {
    Some(PyString::new(py, s).into_any().unbind())
}

/// The SDK's error as the matching Python exception (same message as the CLI's).
fn to_py(py: Python<'_>, e: ClientError) -> PyErr {
    let msg = e.to_string();
    match e {
        ClientError::Policy { .. } => raise::<PolicyError>(py, msg, &[]),
        ClientError::Proto(ProtoError::Evidence(r)) => {
            raise::<EvidenceRejected>(py, msg, &[("code", text(py, r.code()))])
        }
        ClientError::Http {
            url, status, code, ..
        } => raise::<ServerError>(
            py,
            msg,
            &[
                (
                    "status",
                    Some(status.into_pyobject(py).unwrap().into_any().unbind()),
                ),
                ("code", code.as_deref().and_then(|c| text(py, c))),
                ("url", text(py, &url)),
            ],
        ),
        ClientError::Failed(f) => {
            raise::<EnclaveFailed>(py, msg, &[("failure", text(py, f.code()))])
        }
        ClientError::Restarted => raise::<EnclaveRestarted>(py, msg, &[]),
        ClientError::KeyRotated => raise::<KeyRotated>(py, msg, &[]),
        ClientError::MeasurementChanged { ref was, ref now } => {
            let attrs = [("was", text(py, was)), ("now", text(py, now))];
            raise::<MeasurementChanged>(py, msg, &attrs)
        }
        ClientError::BadAnswer(_) | ClientError::Answer(_) => raise::<AnswerRejected>(py, msg, &[]),
        _ => raise::<OrigamiError>(py, msg, &[]),
    }
}

/// `policy`: a path (str or os.PathLike) to a TOML policy, or a dict of the same keys.
fn policy_from(policy: &Bound<'_, PyAny>) -> PyResult<Policy> {
    let py = policy.py();
    if let Ok(d) = policy.cast::<PyDict>() {
        return pythonize::depythonize::<Policy>(d.as_any())
            .map_err(|e| raise::<PolicyError>(py, format!("policy: {e}"), &[]));
    }
    match policy.extract::<PathBuf>() {
        Ok(path) => origami_client::load_policy(&path).map_err(|e| to_py(py, e)),
        Err(_) => Err(PyTypeError::new_err(
            "policy must be a path to a TOML file (str or os.PathLike) or a dict",
        )),
    }
}

/// The evidence a client verified: what runs where, and what the host sees.
#[pyclass(frozen, module = "origami_client", name = "Evidence")]
struct Evidence {
    /// `simulated`, `sgx-gramine`, `tdx` or `sev-snp`.
    #[pyo3(get)]
    platform: String,
    /// Hex SHA-256 of the enclave code (MRENCLAVE under SGX).
    #[pyo3(get)]
    code_id: String,
    /// Hex hash of the served model.
    #[pyo3(get)]
    model_hash: String,
    /// Hex hash of the quantization plan.
    #[pyo3(get)]
    plan_hash: String,
    /// `enclave`, `slalom` or `origami`.
    #[pyo3(get)]
    placement: String,
    /// The origami split (linear layers in the enclave), else None.
    #[pyo3(get)]
    split: Option<usize>,
    /// Freivalds integrity checks on the blinded layers.
    #[pyo3(get)]
    verify: bool,
    /// What the untrusted host sees in this placement, in words.
    #[pyo3(get)]
    host_sees: String,
    /// Hex X25519 session key requests are sealed to.
    #[pyo3(get)]
    enclave_key: String,
}

#[pymethods]
impl Evidence {
    fn __repr__(&self) -> String {
        format!(
            "Evidence(platform={:?}, placement={:?}, split={}, verify={}, code_id={:?}, model_hash={:?}, host_sees={:?})",
            self.platform,
            self.placement,
            self.split.map_or("None".to_string(), |s| s.to_string()),
            if self.verify { "True" } else { "False" },
            self.code_id,
            self.model_hash,
            self.host_sees,
        )
    }
}

impl From<&RustEvidence> for Evidence {
    fn from(ev: &RustEvidence) -> Self {
        let m = &ev.measurement;
        Evidence {
            platform: ev.platform.id().to_string(),
            code_id: hex(&m.code_id),
            model_hash: hex(&m.model_hash),
            plan_hash: hex(&m.plan_hash),
            placement: m.placement.mode().to_string(),
            split: m.placement.split(),
            verify: m.verify,
            host_sees: ev.host_sees.clone(),
            enclave_key: hex(&ev.enclave_key),
        }
    }
}

/// `x` as the SDK's tensor: float32, `[1, C, H, W]` (a `[C, H, W]` array gains the batch axis),
/// finite, bounded in size.
fn to_tensor(x: &Bound<'_, PyAny>) -> PyResult<Tensor> {
    let py = x.py();
    let np = py.import("numpy")?;
    let arr = np
        .getattr("ascontiguousarray")?
        .call(
            (x,),
            Some(&[("dtype", np.getattr("float32")?)].into_py_dict(py)?),
        )
        .map_err(|e| {
            PyTypeError::new_err(format!(
                "the input is not convertible to a float32 array: {e}"
            ))
        })?;
    let arr = arr.cast::<PyArrayDyn<f32>>()?;
    let mut shape: Vec<usize> = arr.shape().to_vec();
    if shape.len() == 3 {
        shape.insert(0, 1);
    }
    if shape.len() != 4 || shape[0] != 1 {
        return Err(PyValueError::new_err(format!(
            "the input must have shape [1, C, H, W] or [C, H, W], got {:?}",
            arr.shape()
        )));
    }
    if arr.len() == 0 || arr.len() > MAX_INPUT_ELEMENTS {
        return Err(PyValueError::new_err(format!(
            "the input has {} elements; between 1 and {MAX_INPUT_ELEMENTS} are accepted",
            arr.len()
        )));
    }
    let ro = arr.readonly();
    let s = ro
        .as_slice()
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    if s.iter().any(|v| !v.is_finite()) {
        // Which element it is would be a fact about the private input: not said.
        return Err(PyValueError::new_err(
            "the input holds NaN or infinite values",
        ));
    }
    Tensor::new(shape, s.to_vec()).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The answer as a NumPy array (the buffer moves into it, no copy).
fn to_array(py: Python<'_>, t: Tensor) -> PyResult<Bound<'_, PyArrayDyn<f32>>> {
    let out = ArrayD::from_shape_vec(t.shape, t.data)
        .map_err(|e| raise::<AnswerRejected>(py, format!("answer: {e}"), &[]))?;
    Ok(out.into_pyarray(py))
}

/// A request sealed to the attested enclave (`Client.seal`); its answer opens once.
#[pyclass(frozen, module = "origami_client", name = "SealedRequest")]
struct SealedRequest {
    body: Vec<u8>,
    sealed: Mutex<Option<origami_client::Sealed>>,
}

#[pymethods]
impl SealedRequest {
    /// The sealed request's bytes: the body of `POST /v1/infer`, the v2 `sealed_request`
    /// BYTES element.
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.body)
    }

    /// Opens the answer's bytes (the body `/v1/infer` returned, the v2 `sealed_answer`
    /// element): the model's output. Raises AnswerRejected when the enclave did not seal them
    /// for this request, EnclaveFailed when it could not answer; a second call raises
    /// OrigamiError (the answer key is used once).
    fn open<'py>(&self, py: Python<'py>, answer: &[u8]) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let sealed = self
            .sealed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                raise::<OrigamiError>(
                    py,
                    "this sealed request's answer was already opened".into(),
                    &[],
                )
            })?;
        to_array(py, sealed.open(answer).map_err(|e| to_py(py, e))?)
    }
}

/// A verified connection to one Origami server's enclave.
#[pyclass(frozen, module = "origami_client", name = "Client")]
struct Client {
    inner: origami_client::Client,
    url: String,
}

/// The largest input accepted, in elements (1 GiB of float32): bigger arrays are refused before
/// anything is copied.
const MAX_INPUT_ELEMENTS: usize = 1 << 28;

#[pymethods]
impl Client {
    /// Fetches `GET {url}/v1/evidence` and verifies it against `policy` (the network call runs
    /// without the GIL). `timeout`: seconds for each HTTP exchange (None: no limit).
    #[new]
    #[pyo3(signature = (url, policy, *, timeout = None))]
    fn new(
        py: Python<'_>,
        url: String,
        policy: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Self> {
        let policy = policy_from(policy)?;
        let timeout = match timeout {
            None => None,
            Some(t) if t.is_finite() && t > 0.0 => Some(Duration::from_secs_f64(t)),
            Some(t) => {
                return Err(PyValueError::new_err(format!(
                    "timeout must be a positive number of seconds, got {t}"
                )))
            }
        };
        let inner = py
            .detach(|| origami_client::Client::connect_with(&url, &policy, timeout))
            .map_err(|e| to_py(py, e))?;
        Ok(Client { inner, url })
    }

    /// The evidence requests are sealed to now.
    #[getter]
    fn evidence(&self) -> Evidence {
        Evidence::from(&*self.inner.evidence())
    }

    /// Times this client re-attested (after the enclave restarted or rotated its key).
    #[getter]
    fn reattested(&self) -> usize {
        self.inner.reattested()
    }

    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// One private inference. `x`: an array of shape `[1, C, H, W]` (or `[C, H, W]`) of finite
    /// numbers, converted to float32 (no copy when it already is C-contiguous float32).
    /// Returns the model's output as a float32 array.
    fn infer<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let mut input = to_tensor(x)?;
        let result = py.detach(|| self.inner.infer(&input));
        // The client's copy of the private input is wiped; the caller's array is its own.
        input.data.zeroize();
        to_array(py, result.map_err(|e| to_py(py, e))?)
    }

    /// Seals `x` (as `infer` takes it) to the attested enclave without sending it, for another
    /// transport such as a stock KServe v2 client: `SealedRequest.body` is the `sealed_request`
    /// BYTES element; `SealedRequest.open(answer_bytes)` reads the `sealed_answer`.
    fn seal(&self, x: &Bound<'_, PyAny>) -> PyResult<SealedRequest> {
        let py = x.py();
        let mut input = to_tensor(x)?;
        let sealed = self.inner.seal(&input);
        input.data.zeroize();
        let sealed = sealed.map_err(|e| to_py(py, e))?;
        Ok(SealedRequest {
            body: sealed.body.clone(),
            sealed: Mutex::new(Some(sealed)),
        })
    }

    fn __repr__(&self) -> String {
        let ev = self.inner.evidence();
        format!(
            "Client(url={:?}, platform={:?}, placement={:?})",
            self.url,
            ev.platform.id(),
            ev.measurement.placement.name()
        )
    }
}

/// The Origami client's native module; import `origami_client` instead.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Client>()?;
    m.add_class::<Evidence>()?;
    m.add_class::<SealedRequest>()?;
    m.add("OrigamiError", py.get_type::<OrigamiError>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    m.add("EvidenceRejected", py.get_type::<EvidenceRejected>())?;
    m.add("ServerError", py.get_type::<ServerError>())?;
    m.add("EnclaveFailed", py.get_type::<EnclaveFailed>())?;
    m.add("AnswerRejected", py.get_type::<AnswerRejected>())?;
    m.add("ReattestedError", py.get_type::<ReattestedError>())?;
    m.add("EnclaveRestarted", py.get_type::<EnclaveRestarted>())?;
    m.add("KeyRotated", py.get_type::<KeyRotated>())?;
    m.add("MeasurementChanged", py.get_type::<MeasurementChanged>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
