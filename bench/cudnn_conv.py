#!/usr/bin/env python3
"""Times cuDNN (through PyTorch) on 2-D convolutions, the peer of `loom tune-task --target cuda`.

Each layer is N,C,H,W,K,R,S,STRIDE,PAD (loom tune-task --conv2d syntax), fp32, NCHW, no bias.
cuDNN picks its fastest algorithm (torch.backends.cudnn.benchmark = True); TF32 is off, so
cuDNN computes in full fp32 like Loom's kernels. Timing: CUDA events around `number` back-to-back
calls, `number` grown until one repeat lasts --min-repeat-ms, median of --repeat repeats (the
same protocol as Loom's CUDA measurer; cuda_timing.py). Each layer is timed eagerly and as a CUDA
graph (at batch 1 a layer's kernel can be shorter than PyTorch's launch path); the faster of the
two is cuDNN's figure ("gflops"), both are reported.
Prints one JSON object per layer on stdout.

  python3 bench/cudnn_conv.py --conv2d 1,64,56,56,64,3,3,1,1 --conv2d 1,3,224,224,64,7,7,2,3
"""
import argparse
import json
import sys

import cuda_timing


def parse_layer(text):
    v = [int(x) for x in text.split(",")]
    if len(v) != 9 or min(v[:7]) < 1 or v[7] < 1 or v[8] < 0:
        raise argparse.ArgumentTypeError(f"--conv2d takes N,C,H,W,K,R,S,STRIDE,PAD, got '{text}'")
    return v


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conv2d", type=parse_layer, action="append", required=True)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--min-repeat-ms", type=float, default=50.0)
    p.add_argument("--device", default="cuda:0")
    args = p.parse_args()

    torch, dev = cuda_timing.setup(args.device, "cudnn_conv.py")
    name = torch.cuda.get_device_name(dev)
    for n, c, h, w, k, r, s, stride, pad in args.conv2d:
        gen = torch.Generator(device=dev).manual_seed(0)
        x = torch.rand((n, c, h, w), device=dev, generator=gen) * 2 - 1
        wt = torch.rand((k, c, r, s), device=dev, generator=gen) * 2 - 1
        oh = (h + 2 * pad - r) // stride + 1
        ow = (w + 2 * pad - s) // stride + 1
        flops = 2.0 * n * k * oh * ow * c * r * s

        def conv():
            return torch.nn.functional.conv2d(x, wt, stride=stride, padding=pad)

        with torch.no_grad():
            t = cuda_timing.time_call(torch, dev, conv, args.repeat, args.min_repeat_ms)
        print(json.dumps({
            "layer": f"{n},{c},{h},{w},{k},{r},{s},{stride},{pad}",
            "device": name,
            "median_ms": t["best_s"] * 1e3,
            "gflops": flops / t["best_s"] / 1e9,
            "eager_gflops": flops / t["eager_s"] / 1e9,
            "graph_gflops": flops / t["graph_s"] / 1e9 if t["graph_s"] else None,
            "graph_error": t["graph_error"],
            "number": t["number"],
            "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
