#!/usr/bin/env python3
"""Turns the JSON results of scripts/gpu-check.sh (`origami bench --json` files and
scripts/torch-baseline.py's file) into one Markdown report: every measurement, then the issue's
goals as ratios, each computed from numbers measured in the same call (and, for our own ratios,
in the same `origami bench` run).

    python3 scripts/gpu-report.py DIR            # reads DIR/bench-*.json, DIR/torch-baseline.json
    python3 scripts/gpu-report.py DIR --out DIR/report.md

Standard library only.
"""

import argparse
import glob
import json
import os
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"gpu-report: skipping {path}: {e}", file=sys.stderr)
        return None


def fmt(x, digits=2):
    return "—" if x is None else f"{x:.{digits}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--out", help="write the report here as well as to stdout")
    args = ap.parse_args()

    # Our runs: (model, batch, math, placement, enclave threads) -> result, with the file it
    # came from; one file is one `origami bench` run.
    ours = {}
    cards = set()
    for path in sorted(glob.glob(os.path.join(args.dir, "bench-*.json"))):
        doc = load(path)
        if not doc:
            continue
        acc = doc.get("accelerator", "?")
        cards.add(acc.replace(" [tf32 tail]", ""))
        math = "tf32" if "[tf32 tail]" in acc else "fp32"
        b = doc.get("batch", 1)
        t = doc.get("enclave_threads", 1)
        for r in doc.get("results", []):
            place = r["placement"].split(" ")[0]
            r = dict(r, file=os.path.basename(path), threads=t)
            r.setdefault("per_image_ms", r["median_ms"] / b)
            ours[(doc["model"], b, math, place, t)] = r

    torch = load(os.path.join(args.dir, "torch-baseline.json")) or {"results": []}
    base = {(r["model"], r["batch"], r["mode"]): r for r in torch["results"]}

    out = []
    say = out.append
    say("# GPU benchmark report")
    say("")
    say(f"Accelerator (ours): {', '.join(sorted(cards)) or '—'}. "
        f"PyTorch: {torch.get('device', '—')}, torch {torch.get('torch', '—')}, "
        f"cuDNN {torch.get('cudnn', '—')}. Enclave: simulated in-process on the GPU machine's "
        f"CPU, threads as listed.")
    say("")
    say("## Our runs (`origami --accel cuda bench`)")
    say("")
    say("| model | batch | tail math | placement | enclave threads | median ms / run "
        "| ms / image | enclave ms | blinded ms | tail ms | precompute ms / image | file |")
    say("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (m, b, math, p, t), r in sorted(ours.items()):
        say(f"| {m} | {b} | {math} | {p} | {t} | {fmt(r['median_ms'])} "
            f"| {fmt(r['per_image_ms'], 3)} | {fmt(r['enclave_ms'])} | {fmt(r['field_ms'])} "
            f"| {fmt(r['tail_ms'])} "
            f"| {fmt(r.get('precompute_ms_per_image'))} (×{r.get('precompute_threads', 1)} threads) "
            f"| {r['file']} |")
    say("")
    if base:
        say("## PyTorch (torchvision, same call)")
        say("")
        say("| model | batch | mode | median ms | min ms | ms / image |")
        say("|---|---|---|---|---|---|")
        for (m, b, mode), r in sorted(base.items()):
            say(f"| {m} | {b} | {mode} | {fmt(r['median_ms'], 3)} | {fmt(r['min_ms'], 3)} "
                f"| {fmt(r['per_image_ms'], 3)} |")
        say("")

    say("## Goals")
    say("")
    say("| a / b | model | batch | a: ms | b: ms | a / b | goal | met |")
    say("|---|---|---|---|---|---|---|---|")
    models = sorted({k[0] for k in ours} | {k[0] for k in base})

    def row(goal, m, b, a, ref, limit, le=True):
        if a is None or ref is None or ref == 0:
            say(f"| {goal} | {m} | {b} | {fmt(a)} | {fmt(ref)} | — | {'≤' if le else '≥'} "
                f"{limit} | not measured |")
            return
        ratio = a / ref
        met = ratio <= limit if le else ratio >= limit
        say(f"| {goal} | {m} | {b} | {fmt(a, 3)} | {fmt(ref, 3)} | {ratio:.2f}x "
            f"| {'≤' if le else '≥'} {limit}x | {'yes' if met else 'NO'} |")

    def get(m, b, p, math="fp32", t=1):
        return ours.get((m, b, math, p, t))

    def same_run(a, b):
        """(a, b) when both come from one `origami bench` run, else (a, None)."""
        return a, (b if a and b and a["file"] == b["file"] else None)

    def ms(r, key="median_ms"):
        return r[key] if r else None

    many = max([k[4] for k in ours if k[3] == "tee-plain"] or [1])
    for m in models:
        for b in sorted({k[1] for k in ours if k[0] == m} | {k[1] for k in base if k[0] == m}):
            plain = ms(get(m, b, "plain"))
            for mode in ("fp32", "fp32-tuned"):
                ref = base.get((m, b, mode))
                row(f"plain fp32 / PyTorch {mode}", m, b, plain, ref and ref["median_ms"], 1.2)
            ref = base.get((m, b, "default"))
            row("plain --tf32 / PyTorch default (TF32 convs)", m, b,
                ms(get(m, b, "plain", "tf32")), ref and ref["median_ms"], 1.2)
        o = get(m, 1, "origami")
        for base_p in ("enclave", "tee-plain"):
            a, r = same_run(get(m, 1, base_p), o)
            row(f"{base_p} (1 thread) / origami (speedup; same run)", m, 1, ms(a), ms(r), 30,
                le=False)
        if many > 1:
            row(f"tee-plain on {many} threads / origami (speedup; same call)", m, 1,
                ms(get(m, 1, "tee-plain", t=many)), ms(o), 3, le=False)
        for b in sorted({k[1] for k in ours if k[0] == m}):
            a, r = same_run(get(m, b, "origami"), get(m, b, "plain"))
            row("origami / plain per image (same run)", m, b, ms(a, "per_image_ms"),
                ms(r, "per_image_ms"), 2.0)
    say("")
    say("Ratios are of medians. Rows marked speedup are the baseline's time over origami's "
        "(goal: at least the factor); the others are slowdowns (goal: at most the factor).")
    threads = sorted({k[4] for k in ours if k[3] == "origami" and k[1] == 1})
    if len(threads) > 1:
        say("")
        say("## Enclave threads (origami, batch 1)")
        say("")
        say("| model | enclave threads | median ms | enclave ms | blinded ms | tail ms |")
        say("|---|---|---|---|---|---|")
        for (m, b, math, p, t), r in sorted(ours.items()):
            if p == "origami" and b == 1 and math == "fp32":
                say(f"| {m} | {t} | {fmt(r['median_ms'])} | {fmt(r['enclave_ms'])} "
                    f"| {fmt(r['field_ms'])} | {fmt(r['tail_ms'])} |")

    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
