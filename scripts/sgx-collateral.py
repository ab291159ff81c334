#!/usr/bin/env python3
"""Fetch DCAP collateral for the SGX platform an origami server runs on.

The collateral (TCB info, QE identity, CRLs) is signed by Intel, so the untrusted host may
fetch and carry it: `origami serve --sgx-collateral FILE` attaches it to the evidence, and
clients verify it (dcap-qvl) against Intel's root CA. It depends on the platform, not on the
enclave instance; refresh it before its nextUpdate (about 30 days).

    pip install dcap-qvl==0.7.0
    scripts/sgx-collateral.py --server http://127.0.0.1:8080 --out collateral.json
    scripts/sgx-collateral.py --quote quote.bin --pccs https://pccs.example:8081 --out c.json

Not run in development (no SGX machine, and no network beyond package registries).
"""
import argparse
import asyncio
import json
import sys
import urllib.request


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--server", help="origami server base URL (its /v1/evidence holds a quote)")
    src.add_argument("--quote", help="a raw DCAP quote file")
    ap.add_argument("--pccs", default="https://api.trustedservices.intel.com",
                    help="PCCS (or Intel PCS) base URL")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    try:
        import dcap_qvl
    except ImportError:
        print("error: pip install dcap-qvl==0.7.0", file=sys.stderr)
        return 2
    if args.server:
        with urllib.request.urlopen(args.server.rstrip("/") + "/v1/evidence", timeout=30) as r:
            ev = json.load(r)
        if ev.get("platform") != "SgxGramine":
            print(f"error: the server's platform is {ev.get('platform')}, not SgxGramine",
                  file=sys.stderr)
            return 1
        quote = bytes(ev["proof"])
    else:
        with open(args.quote, "rb") as f:
            quote = f.read()
    collateral = asyncio.run(dcap_qvl.get_collateral(args.pccs, quote))
    text = collateral.to_json()
    json.loads(text)  # well-formed
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    import os
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
