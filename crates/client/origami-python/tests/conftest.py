"""Fixtures: a real `origami serve` on loopback (the binary named by ORIGAMI_BIN), the
reference answers of `origami run`, and a tampering proxy written in Python (it runs in this
process, so every request through it also shows that the client releases the GIL while it
waits on the network: a client holding it would deadlock against its own proxy)."""

import http.client
import http.server
import json
import os
import pathlib
import subprocess
import tempfile
import threading
import urllib.parse

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[4]


def origami_bin() -> str:
    b = os.environ.get("ORIGAMI_BIN") or str(ROOT / "target" / "debug" / "origami")
    if not os.path.exists(b):
        pytest.fail(f"the origami binary is not at {b} (set ORIGAMI_BIN)")
    return b


class Served:
    def __init__(self, proc, url, v2_model, policy_lines):
        self.proc = proc
        self.url = url
        # The v2 name of the served model (`…/v2/models/NAME`).
        self.v2_model = v2_model
        # `platform = "simulated"`, `code_id = "…"`, `model_hash = "…"`
        self.fields = {}
        for part in policy_lines.split(", "):
            k, v = part.split(" = ", 1)
            self.fields[k] = json.loads(v)

    def policy(self, **extra):
        """A policy dict that admits this server's simulated enclave."""
        p = {
            "allow_simulated": True,
            "placements": ["slalom"],
            "measurements": [dict(self.fields)],
        }
        p.update(extra)
        return p


@pytest.fixture(scope="session")
def server():
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    proc = subprocess.Popen(
        [origami_bin(), "serve", "--listen", "127.0.0.1:0", "--model", "fashion", "--mode", "slalom"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    url, policy, v2 = None, None, None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("listening on "):
            url = line[len("listening on "):].strip()
        if line.startswith("KServe v2: "):
            v2 = line.split()[2].rsplit("/", 1)[1]
        if line.startswith("policy for clients: "):
            policy = line[len("policy for clients: "):].strip()
            break
    if url is None or policy is None or v2 is None:
        proc.kill()
        pytest.fail("origami serve did not start:\n" + "".join(seen))
    # Keep draining stdout so the server never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    yield Served(proc, url, v2, policy)
    proc.terminate()
    proc.wait(timeout=30)


def reference(x: np.ndarray) -> np.ndarray:
    """`origami run --mode slalom` on the same input: the answer a private request must equal."""
    with tempfile.TemporaryDirectory() as d:
        xin, yout = os.path.join(d, "x.npy"), os.path.join(d, "y.npy")
        np.save(xin, np.ascontiguousarray(x, dtype=np.float32))
        subprocess.run(
            [origami_bin(), "run", "--model", "fashion", "--mode", "slalom", "--input", xin, "--output", yout],
            check=True,
            capture_output=True,
            env=dict(os.environ, RAYON_NUM_THREADS="2"),
        )
        return np.load(yout)


def sample(seed: int) -> np.ndarray:
    """A 28×28 image-like input in [0, 1]: a smooth blob plus noise, different per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    cy, cx, r = rng.uniform(8, 20), rng.uniform(8, 20), rng.uniform(4, 10)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img = np.clip(0.8 * blob + 0.2 * rng.random((28, 28)), 0, 1)
    return img.reshape(1, 1, 28, 28).astype(np.float32)


class Proxy:
    """Forwards to the server; `flip_evidence` / `flip_answer` flip one bit on the way back."""

    def __init__(self, upstream: str):
        self.upstream = urllib.parse.urlparse(upstream)
        self.flip_evidence = False
        self.flip_answer = False
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def forward(self, method):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else None
                c = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type",)}
                c.request(method, self.path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                if r.status == 200 and self.path == "/v1/evidence" and proxy.flip_evidence:
                    ev = json.loads(data)
                    ev["enclave_key"][0] ^= 1
                    data = json.dumps(ev).encode()
                if r.status == 200 and self.path == "/v1/infer" and proxy.flip_answer:
                    data = data[:-1] + bytes([data[-1] ^ 0x01])
                self.send_response(r.status)
                self.send_header("content-type", r.getheader("content-type") or "application/octet-stream")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.forward("GET")

            def do_POST(self):
                self.forward("POST")

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def proxy(server):
    p = Proxy(server.url)
    yield p
    p.close()
