"""The Python client against a real `origami serve` (simulated enclave) on loopback."""

import threading

import numpy as np
import pytest

import origami_client
from conftest import reference, sample


def test_the_default_policy_refuses_the_simulated_enclave(server, tmp_path):
    with pytest.raises(origami_client.EvidenceRejected) as e:
        origami_client.Client(server.url, policy={})
    assert e.value.code == "simulated"
    assert "SIMULATED" in str(e.value) and "refused by policy" in str(e.value)
    # The same from an (empty) policy file.
    p = tmp_path / "policy.toml"
    p.write_text("")
    with pytest.raises(origami_client.EvidenceRejected):
        origami_client.Client(server.url, policy=p)
    assert issubclass(origami_client.EvidenceRejected, origami_client.OrigamiError)


def test_a_policy_file_and_a_dict_give_the_same_verified_evidence(server, tmp_path):
    f = server.fields
    p = tmp_path / "policy.toml"
    p.write_text(
        'allow_simulated = true\nplacements = ["slalom"]\n[[measurements]]\n'
        f'platform = "{f["platform"]}"\ncode_id = "{f["code_id"]}"\nmodel_hash = "{f["model_hash"]}"\n'
    )
    a = origami_client.Client(server.url, policy=str(p))
    b = origami_client.Client(server.url, policy=server.policy(), timeout=60)
    for ev in (a.evidence, b.evidence):
        assert ev.platform == "simulated"
        assert ev.placement == "slalom"
        assert ev.split is None
        assert ev.verify is True
        assert ev.code_id == f["code_id"] and ev.model_hash == f["model_hash"]
        assert "not the answer" in ev.host_sees
        assert len(ev.enclave_key) == 64 and len(ev.plan_hash) == 64
    assert a.evidence.enclave_key == b.evidence.enclave_key
    assert "slalom" in repr(a.evidence) and server.url in repr(a)


def test_an_answer_is_bit_identical_to_origami_run(server):
    c = origami_client.Client(server.url, policy=server.policy())
    x = sample(1)
    y = c.infer(x)
    ref = reference(x)
    assert y.dtype == np.float32
    assert y.shape == ref.shape
    assert np.array_equal(y, ref), (y, ref)
    # [C, H, W] is taken as a batch of one; float64 and C-order copies convert.
    assert np.array_equal(c.infer(x[0]), ref)
    assert np.array_equal(c.infer(x.astype(np.float64)), ref)
    assert np.array_equal(c.infer(np.asfortranarray(x)), ref)
    assert c.reattested == 0


def test_a_flipped_bit_in_the_evidence_raises(server, proxy):
    proxy.flip_evidence = True
    with pytest.raises(origami_client.EvidenceRejected) as e:
        origami_client.Client(proxy.url, policy=server.policy())
    assert e.value.code == "bad_simulated_proof", e.value


def test_a_flipped_bit_in_the_answer_raises(server, proxy):
    c = origami_client.Client(proxy.url, policy=server.policy())
    x = sample(2)
    # Untouched through the proxy: the answer (and the proxy, Python code in this process,
    # served while the client waited, so the GIL was released).
    assert np.array_equal(c.infer(x), reference(x))
    proxy.flip_answer = True
    with pytest.raises(origami_client.AnswerRejected):
        c.infer(x)


def test_eight_threads_share_one_client_and_each_gets_its_own_answer(server):
    c = origami_client.Client(server.url, policy=server.policy())
    inputs = [sample(100 + t) for t in range(8)]
    refs = [reference(x) for x in inputs]
    # Different inputs give different answers, so a mixed-up answer would be caught.
    assert len({r.tobytes() for r in refs}) == 8
    got = [[] for _ in range(8)]
    errors = []

    def work(t):
        try:
            for _ in range(10):
                got[t].append(c.infer(inputs[t]))
        except Exception as e:  # reported below with the thread's number
            errors.append((t, e))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=600)
    assert not errors, errors
    for t in range(8):
        assert len(got[t]) == 10
        for y in got[t]:
            assert np.array_equal(y, refs[t])


def test_bad_inputs_are_refused_before_anything_is_sent(server):
    c = origami_client.Client(server.url, policy=server.policy())
    with pytest.raises(ValueError, match=r"shape \[1, C, H, W\]"):
        c.infer(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="shape"):
        c.infer(np.zeros((28, 28), np.float32))
    x = sample(3)
    x[0, 0, 5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        c.infer(x)
    with pytest.raises(TypeError, match="float32"):
        c.infer([["a", "b"]])
    # A shape the model does not take: the enclave says so, sealed to this client.
    with pytest.raises(origami_client.EnclaveFailed) as e:
        c.infer(np.zeros((1, 1, 27, 28), np.float32))
    assert e.value.failure == "bad_input"


def test_bad_policies_and_servers_raise_clear_errors(server, tmp_path):
    with pytest.raises(origami_client.PolicyError, match="allow_everything"):
        origami_client.Client(server.url, policy={"allow_everything": True})
    with pytest.raises(origami_client.PolicyError, match="no-such-policy.toml"):
        origami_client.Client(server.url, policy=tmp_path / "no-such-policy.toml")
    with pytest.raises(TypeError, match="policy must be"):
        origami_client.Client(server.url, policy=42)
    with pytest.raises(ValueError, match="timeout"):
        origami_client.Client(server.url, policy=server.policy(), timeout=-1)
    # Nothing listens on port 9 of loopback here.
    with pytest.raises(origami_client.ServerError) as e:
        origami_client.Client("http://127.0.0.1:9", policy=server.policy())
    assert e.value.status == 0 and e.value.code is None
