"""Helpers of the affinity test: an `origami serve` replica on loopback (port 0; the binary
named by ORIGAMI_BIN) and a small layer-7 load balancer written in Python that stands in for a
Kubernetes Service or an ingress in front of replicas (deploy/k8s/service.yaml; docs/CVM.md,
"Session affinity")."""

import http.client
import http.server
import json
import os
import pathlib
import signal
import subprocess
import threading
import urllib.parse
import urllib.request

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]


def origami_bin() -> str:
    b = os.environ.get("ORIGAMI_BIN") or str(ROOT / "target" / "debug" / "origami")
    if not os.path.exists(b):
        pytest.fail(f"the origami binary is not at {b} (set ORIGAMI_BIN; build it with "
                    "cargo build -p origami-cli -p origami-enclave-bin)")
    return b


class Replica:
    """One `origami serve` with its own enclave child (own keys, instance, pads)."""

    def __init__(self):
        env = dict(os.environ, RAYON_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [origami_bin(), "serve", "--listen", "127.0.0.1:0", "--model", "fashion", "--mode", "slalom"],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        self.url, self.fields, self.enclave_pid, seen = None, None, None, []
        for line in self.proc.stdout:
            seen.append(line)
            if line.startswith("listening on "):
                self.url = line[len("listening on "):].strip()
            if line.startswith("enclave process: pid "):
                self.enclave_pid = int(line.split()[-1])
            if line.startswith("policy for clients: "):
                self.fields = {}
                for part in line[len("policy for clients: "):].strip().split(", "):
                    k, v = part.split(" = ", 1)
                    self.fields[k] = json.loads(v)
                break
        if self.url is None or self.fields is None:
            self.proc.kill()
            pytest.fail("origami serve did not start:\n" + "".join(seen))
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.port = urllib.parse.urlparse(self.url).port

    def evidence(self) -> dict:
        with urllib.request.urlopen(self.url + "/v1/evidence", timeout=30) as r:
            return json.load(r)

    def stop(self):
        """SIGINT: the server answers what it received, stops its enclave child and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def policy_for(replica: Replica) -> dict:
    """One policy for every replica: they share code_id and model_hash (same binaries, same
    model); only their keys differ."""
    return {"allow_simulated": True, "placements": ["slalom"], "measurements": [dict(replica.fields)]}


class Balancer:
    """An HTTP load balancer in front of `backends` (replica URLs).

    mode "client-ip": what a Service with `sessionAffinity: ClientIP` does (and an ingress
    hashing on the client address). On loopback every client's address is 127.0.0.1, so each
    client is given its own listener here (`listener_urls[i]`, one per client address) and the
    listener is the affinity key: the first request of a key goes to the next backend in turn,
    and every later one, on any connection, to that same backend. Each response closes its
    connection, so every request arrives on a fresh TCP connection from a new source port:
    the affinity does not rest on a kept-alive connection.

    mode "round-robin": one listener; every HTTP request goes to the next backend, whatever
    the client or connection (keep-alive allowed): no affinity.

    A backend that refuses connections is taken out (as an endpoint of a deleted pod is) and
    its clients are moved to a live one, the request in hand included.
    """

    def __init__(self, backends, mode, clients=1):
        assert mode in ("client-ip", "round-robin")
        self.mode = mode
        self.backends = [urllib.parse.urlparse(b) for b in backends]
        self.down = set()
        self.lock = threading.Lock()
        self.turn = 0
        self.sticky = {}  # affinity key -> backend index
        self.log = []  # (key, method, path, backend index, status)
        self.servers = []
        listeners = clients if mode == "client-ip" else 1
        for key in range(listeners):
            self.servers.append(self._listen(key))
        self.listener_urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in self.servers]

    def _next_live(self):
        for _ in range(len(self.backends)):
            i = self.turn % len(self.backends)
            self.turn += 1
            if i not in self.down:
                return i
        raise RuntimeError("no live backend")

    def _choose(self, key):
        with self.lock:
            if self.mode == "round-robin":
                return self._next_live()
            i = self.sticky.get(key)
            if i is None or i in self.down:
                i = self.sticky[key] = self._next_live()
            return i

    def _mark_down(self, i):
        with self.lock:
            self.down.add(i)

    def _listen(self, key):
        lb = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self, method):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else None
                headers = {k: v for k, v in self.headers.items() if k.lower() == "content-type"}
                while True:
                    i = lb._choose(key)
                    b = lb.backends[i]
                    c = http.client.HTTPConnection(b.hostname, b.port, timeout=60)
                    try:
                        c.request(method, self.path, body=body, headers=headers)
                    except ConnectionRefusedError:
                        lb._mark_down(i)
                        continue
                    r = c.getresponse()
                    data = r.read()
                    c.close()
                    break
                with lb.lock:
                    lb.log.append((key, method, self.path, i, r.status))
                self.send_response(r.status)
                self.send_header("content-type", r.getheader("content-type") or "application/octet-stream")
                self.send_header("content-length", str(len(data)))
                if lb.mode == "client-ip":
                    self.send_header("connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.forward("GET")

            def do_POST(self):
                self.forward("POST")

        s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, daemon=True).start()
        return s

    def backends_of(self, key):
        with self.lock:
            return {i for k, _, _, i, _ in self.log if k == key}

    def close(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()


def sample(seed: int) -> np.ndarray:
    """A 28×28 image-like input in [0, 1], different per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    cy, cx, r = rng.uniform(8, 20), rng.uniform(8, 20), rng.uniform(4, 10)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img = np.clip(0.8 * blob + 0.2 * rng.random((28, 28)), 0, 1)
    return img.reshape(1, 1, 28, 28).astype(np.float32)
