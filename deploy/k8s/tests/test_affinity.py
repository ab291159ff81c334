"""Why the load balancer in front of Origami replicas must keep a client on one replica, and
what the client does when it is moved (docs/CVM.md, "Session affinity").

Each replica's enclave has its own session key: a client attests one replica (GET
/v1/evidence) and seals its requests to that replica's key. With affinity (a Service's
`sessionAffinity: ClientIP`) every request reaches the attested replica. Without it, a request
sealed to one replica's key reaches the other, which refuses it unopened (409 key_retired);
the client never gets a wrong answer, only typed errors."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import origami_client
import pytest

from replicas import Balancer, policy_for, sample

SEEDS = list(range(6))


@pytest.fixture(scope="module")
def expected(replicas):
    """Each input's answer from each replica directly: the same model on both, so the same
    bits; this is what any client must get, through any balancer."""
    want = {}
    for s in SEEDS:
        ys = [origami_client.Client(r.url, policy=policy_for(r)).infer(sample(s)) for r in replicas]
        assert ys[0].tobytes() == ys[1].tobytes(), f"replicas disagree on seed {s}"
        want[s] = ys[0]
    return want


def test_replicas_share_a_measurement_but_not_keys(replicas):
    a, b = (r.evidence() for r in replicas)
    assert a["measurement"] == b["measurement"]
    assert replicas[0].fields == replicas[1].fields  # one client policy admits both
    assert a["enclave_key"] != b["enclave_key"]
    assert a["instance"] != b["instance"]


def test_client_ip_affinity_keeps_each_client_on_its_attested_replica(replicas, expected):
    clients = 4
    lb = Balancer([r.url for r in replicas], "client-ip", clients=clients)
    keys = [r.evidence()["enclave_key"] for r in replicas]
    try:
        cs = [origami_client.Client(u, policy=policy_for(replicas[0])) for u in lb.listener_urls]

        def run(k):
            got = []
            for s in SEEDS:
                got.append((s, cs[k].infer(sample(s))))
            return got

        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(run, range(clients)))
        for k, got in enumerate(results):
            for s, y in got:
                assert y.tobytes() == expected[s].tobytes(), f"client {k}, seed {s}"
            assert cs[k].reattested == 0, f"client {k} re-attested"
            [backend] = lb.backends_of(k)  # evidence and every request: one replica
            assert bytes.fromhex(cs[k].evidence.enclave_key) == bytes(keys[backend])
        # One GET and len(SEEDS) POSTs per client, each on its own connection.
        assert len(lb.log) == clients * (1 + len(SEEDS))
        # Clients were spread: both replicas served some.
        assert {i for _, _, _, i, _ in lb.log} == {0, 1}
    finally:
        lb.close()


def test_without_affinity_requests_fail_typed_never_wrong(replicas, expected):
    lb = Balancer([r.url for r in replicas], "round-robin")
    try:
        cs = [origami_client.Client(lb.listener_urls[0], policy=policy_for(replicas[0])) for _ in range(3)]
        answered, failed = 0, []
        for round_ in range(4):
            for k, c in enumerate(cs):
                s = SEEDS[(round_ + k) % len(SEEDS)]
                try:
                    y = c.infer(sample(s))
                except origami_client.ReattestedError as e:
                    failed.append(type(e).__name__)
                except origami_client.ServerError as e:
                    # The request was sealed to the other replica's key: refused unopened.
                    assert (e.status, e.code) == (409, "key_retired"), (e.status, e.code, str(e))
                    failed.append(f"ServerError {e.status} {e.code}")
                else:
                    assert y.tobytes() == expected[s].tobytes(), f"client {k}, seed {s}: wrong answer"
                    answered += 1
        # Round-robin alternates the replicas under every client: some requests reached a
        # replica that does not hold the key they were sealed to.
        assert failed, "round-robin never moved a client off its attested replica"
        assert any(st == 409 for _, m, p, _, st in lb.log if m == "POST" and p == "/v1/infer")
        print(f"\nround-robin, 3 clients x 4 requests: {answered} answered correctly, "
              f"{len(failed)} typed errors: {sorted(set(failed))}")
    finally:
        lb.close()


def test_a_client_moved_to_another_replica_reattests_once(replicas, spare_replica, expected):
    """A replica goes away (scale-down, a drain, a crash): its clients land on another one,
    get KeyRotated (re-attested to the new replica: same measurement, new key), and the
    retried request is answered."""
    lb = Balancer([replicas[0].url, spare_replica.url], "client-ip", clients=2)
    try:
        cs = [origami_client.Client(u, policy=policy_for(replicas[0])) for u in lb.listener_urls]
        for c in cs:
            assert c.infer(sample(0)).tobytes() == expected[0].tobytes()
        assert lb.backends_of(0) == {0} and lb.backends_of(1) == {1}  # client 1 on the spare
        spare_replica.stop()
        assert cs[0].infer(sample(1)).tobytes() == expected[1].tobytes()
        with pytest.raises(origami_client.KeyRotated):
            cs[1].infer(sample(1))
        assert cs[1].reattested == 1
        assert cs[1].infer(sample(1)).tobytes() == expected[1].tobytes()
        assert lb.backends_of(1) == {0, 1}
        assert cs[0].reattested == 0
    finally:
        lb.close()
