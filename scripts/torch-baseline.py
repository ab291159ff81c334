#!/usr/bin/env python3
"""PyTorch baseline for the GPU benchmark (issue "CUDA accelerator"): torchvision's VGG-16/19
(random weights: timings do not depend on them), 224x224, eval mode, inference_mode, on one
GPU, batch 1 and 64. Runs on the GPU machine (its python3 has torch and torchvision), in the
same call as `origami --accel cuda bench`, so the two are measured side by side.

Modes (PyTorch's math settings, recorded in the JSON as set):
  fp32          TF32 off for cuDNN convolutions and matmuls (IEEE fp32 everywhere), the
                comparison for our plain tail (f32, CUBLAS_DEFAULT_MATH);
  fp32-tuned    as fp32, with cudnn.benchmark=True (cuDNN picks the fastest algorithm per shape);
  default       PyTorch's settings as it starts, untouched (cuDNN convolutions may use TF32,
                matmuls do not), the comparison for our --tf32 tail.

Timing: CUDA events around each forward pass (the input already on the GPU, as our tail's
input is the handoff tensor), after warm-ups; median and min over --iters passes.

    python3 scripts/torch-baseline.py --json $OUT/torch-baseline.json
"""

import argparse
import json
import statistics
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="vgg16,vgg19")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--modes", default="fp32,fp32-tuned,default")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (to try the script)")
    ap.add_argument("--size", type=int, default=224, help="input height and width")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.iters < 1 or args.warmup < 0:
        ap.error("--iters must be at least 1 and --warmup at least 0")

    t0 = time.time()
    try:
        import torch
        import torchvision
    except ImportError as e:
        print(f"torch-baseline: PyTorch/torchvision not importable here: {e}", file=sys.stderr)
        return 2
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("torch-baseline: torch sees no CUDA GPU", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"cuDNN {torch.backends.cudnn.version()}, device {name} (import {time.time() - t0:.1f}s)",
          flush=True)

    # PyTorch 2.9+ controls TF32 with fp32_precision ("ieee" | "tf32"; the allow_tf32 flags
    # are deprecated and must not be mixed with it); older versions only have allow_tf32.
    new_api = hasattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision")

    # The raw settings as PyTorch starts (new API: "ieee", "tf32" or "none" = inherit), put
    # back as they were for the "default" mode.
    def get_raw():
        if new_api:
            return (torch.backends.cudnn.conv.fp32_precision,
                    torch.backends.cuda.matmul.fp32_precision)
        return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32

    def set_raw(conv, mm):
        if new_api:
            torch.backends.cudnn.conv.fp32_precision = conv
            torch.backends.cuda.matmul.fp32_precision = mm
        else:
            torch.backends.cudnn.allow_tf32 = conv
            torch.backends.cuda.matmul.allow_tf32 = mm

    defaults = (*get_raw(), torch.backends.cudnn.benchmark)
    strict = ("ieee", "ieee") if new_api else (False, False)
    print(f"PyTorch defaults: conv {defaults[0]!r}, matmul {defaults[1]!r}, "
          f"cudnn.benchmark {defaults[2]} ({'fp32_precision' if new_api else 'allow_tf32'} API)",
          flush=True)

    def set_mode(mode: str) -> dict:
        conv, mm, bench = defaults
        if mode in ("fp32", "fp32-tuned"):
            conv, mm = strict
            bench = mode == "fp32-tuned"
        elif mode != "default":
            raise SystemExit(f"torch-baseline: unknown mode {mode!r}")
        set_raw(conv, mm)
        torch.backends.cudnn.benchmark = bench
        return {"conv_fp32_setting": conv, "matmul_fp32_setting": mm, "cudnn_benchmark": bench}

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    results = []
    for model_name in args.models.split(","):
        ctor = getattr(torchvision.models, model_name.strip(), None)
        if ctor is None:
            raise SystemExit(f"torch-baseline: torchvision has no model {model_name!r}")
        torch.manual_seed(0)
        model = ctor(weights=None).eval().to(dev)
        for batch in [int(b) for b in args.batches.split(",")]:
            x = torch.randn(batch, 3, args.size, args.size, device=dev)
            for mode in args.modes.split(","):
                flags = set_mode(mode.strip())
                times = []
                with torch.inference_mode():
                    for i in range(args.warmup + args.iters):
                        if dev.type == "cuda":
                            start = torch.cuda.Event(enable_timing=True)
                            end = torch.cuda.Event(enable_timing=True)
                            start.record()
                            y = model(x)
                            end.record()
                            end.synchronize()
                            ms = start.elapsed_time(end)
                        else:
                            t = time.perf_counter()
                            y = model(x)
                            ms = (time.perf_counter() - t) * 1e3
                        if i >= args.warmup:
                            times.append(ms)
                sync()
                assert tuple(y.shape) == (batch, 1000), y.shape
                r = {"model": model_name, "batch": batch, "mode": mode,
                     "median_ms": statistics.median(times), "min_ms": min(times),
                     "per_image_ms": statistics.median(times) / batch, "iters": len(times),
                     **flags}
                results.append(r)
                print(f"{model_name:6} bs{batch:<3} {mode:11} median {r['median_ms']:8.3f} ms  "
                      f"min {r['min_ms']:8.3f} ms  per image {r['per_image_ms']:.3f} ms",
                      flush=True)
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    set_mode("default")
    if args.json:
        doc = {"device": name, "torch": torch.__version__, "torchvision": torchvision.__version__,
               "cudnn": torch.backends.cudnn.version(), "size": args.size,
               "warmup": args.warmup, "results": results}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
        print(f"wrote {args.json}")
    print(f"total {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
