"""A stock KServe v2 client (`tritonclient.http` from PyPI) against `origami serve`: health,
readiness and metadata calls, and a private request it carries as one sealed BYTES tensor,
sealed and opened by `origami_client`. Skips when tritonclient is not installed, fails instead
with ORIGAMI_REQUIRE_TRITON=1 (scripts/python-client.sh sets it when the install worked)."""

import base64
import os
import time

import numpy as np
import pytest

import origami_client
from conftest import reference, sample

try:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException
except ImportError as e:  # pragma: no cover - depends on the venv
    if os.environ.get("ORIGAMI_REQUIRE_TRITON") == "1":
        raise
    pytest.skip(f"tritonclient[http] is not installed ({e})", allow_module_level=True)


def stock(server):
    return triton.InferenceServerClient(url=server.url[len("http://"):], network_timeout=120.0)


def test_health_readiness_and_metadata(server):
    c = stock(server)
    assert c.is_server_live()
    # Ready once the enclave worker runs and a pad is ready (slalom needs pads).
    for _ in range(600):
        if c.is_server_ready() and c.is_model_ready(server.v2_model):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the server never became ready")
    meta = c.get_server_metadata()
    assert meta["name"] == "origami"
    assert "binary_tensor_data" in meta["extensions"] and "origami" in meta["extensions"]
    md = c.get_model_metadata(server.v2_model)
    assert md["name"] == server.v2_model
    assert md["platform"] == "origami"
    assert md["versions"] == ["1"]
    assert md["inputs"][0]["datatype"] == "FP32"
    assert md["inputs"][0]["shape"] == [1, 1, 28, 28]
    assert md["outputs"][0]["shape"] == [1, 10]
    assert c.get_model_metadata(server.v2_model, model_version="1")["name"] == server.v2_model
    with pytest.raises(InferenceServerException):
        c.get_model_metadata("no-such-model")


def sealed_infer(server, c, binary_output):
    oc = origami_client.Client(server.url, policy=server.policy())
    x = sample(7)
    sealed = oc.seal(x)
    inp = triton.InferInput("sealed_request", [1], "BYTES")
    inp.set_data_from_numpy(np.array([sealed.body], dtype=np.object_), binary_data=True)
    out = triton.InferRequestedOutput("sealed_answer", binary_data=binary_output)
    r = c.infer(server.v2_model, [inp], outputs=[out], request_id="req-7")
    assert r.get_response()["id"] == "req-7"
    answer = r.as_numpy("sealed_answer")[0]
    if not binary_output:
        # v2 JSON carries BYTES elements as strings: the sealed answer is base64 there.
        answer = base64.b64decode(answer)
    return sealed.open(bytes(answer)), reference(x)


def test_a_sealed_request_carried_by_tritonclient_binary(server):
    y, ref = sealed_infer(server, stock(server), binary_output=True)
    assert np.array_equal(y, ref)


def test_a_sealed_request_carried_by_tritonclient_json_answer(server):
    y, ref = sealed_infer(server, stock(server), binary_output=False)
    assert np.array_equal(y, ref)


def test_a_plain_tensor_from_a_stock_client_is_refused(server):
    c = stock(server)
    inp = triton.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(sample(8), binary_data=True)
    with pytest.raises(InferenceServerException) as e:
        c.infer(server.v2_model, [inp])
    assert e.value.status() == "400", e.value
    assert "sealed" in e.value.message(), e.value


def test_a_sealed_answer_opens_once(server):
    oc = origami_client.Client(server.url, policy=server.policy())
    sealed = oc.seal(sample(9))
    c = stock(server)
    inp = triton.InferInput("sealed_request", [1], "BYTES")
    inp.set_data_from_numpy(np.array([sealed.body], dtype=np.object_), binary_data=True)
    # With no outputs named, tritonclient asks for every output as binary data.
    answer = bytes(c.infer(server.v2_model, [inp]).as_numpy("sealed_answer")[0])
    sealed.open(answer)
    with pytest.raises(origami_client.OrigamiError, match="already opened"):
        sealed.open(answer)
