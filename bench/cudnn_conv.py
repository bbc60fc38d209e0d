#!/usr/bin/env python3
"""Times cuDNN (through PyTorch) on 2-D convolutions, the peer of `loom tune-task --target cuda`.

Each layer is N,C,H,W,K,R,S,STRIDE,PAD (loom tune-task --conv2d syntax), fp32, NCHW, no bias.
cuDNN picks its fastest algorithm (torch.backends.cudnn.benchmark = True); TF32 is off, so
cuDNN computes in full fp32 like Loom's kernels. Timing: CUDA events around `number` back-to-back
calls, `number` grown until one repeat lasts --min-repeat-ms, median of --repeat repeats (the
same protocol as Loom's CUDA measurer). At batch 1 a layer's kernel can be shorter than PyTorch's
Python-side launch path, so each layer is also timed as a CUDA graph replaying the same calls, which
leaves only the kernels; the faster of the two is cuDNN's figure ("gflops"), both are reported.
Prints one JSON object per layer on stdout.

  python3 bench/cudnn_conv.py --conv2d 1,64,56,56,64,3,3,1,1 --conv2d 1,3,224,224,64,7,7,2,3
"""
import argparse
import json
import statistics
import sys


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

    import torch  # imported late so that --help works without a GPU stack

    if not torch.cuda.is_available():
        print("cudnn_conv.py: error: PyTorch sees no CUDA device", file=sys.stderr)
        return 1
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device(args.device)
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
            for _ in range(5):  # the first calls run cuDNN's algorithm search
                conv()
            torch.cuda.synchronize(dev)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)

            def eager(number):
                start.record()
                for _ in range(number):
                    conv()
                end.record()
                end.synchronize()
                return start.elapsed_time(end) / 1e3

            def measure(time_runs):
                number, costs = 1, []
                while len(costs) < args.repeat:
                    seconds = time_runs(number)
                    if seconds * 1e3 < args.min_repeat_ms and number < (1 << 20):
                        scale = args.min_repeat_ms / max(seconds * 1e3, 1e-3) * 1.2
                        number = max(number + 1, int(number * min(scale, 100.0)))
                        continue
                    costs.append(seconds / number)
                return statistics.median(costs), number

            eager_cost, number = measure(eager)
            graph_cost, graph_error = None, None
            try:
                # One graph of `calls` convolutions, replayed; `number` counts convolutions.
                calls = 20
                stream = torch.cuda.Stream(dev)
                stream.wait_stream(torch.cuda.current_stream(dev))
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        conv()
                torch.cuda.current_stream(dev).wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    for _ in range(calls):
                        conv()
                graph.replay()
                torch.cuda.synchronize(dev)

                def replay(number):
                    # Whole graphs only: the time of `number` convolutions, scaled from the
                    # ceil(number / calls) graphs run.
                    graphs = -(-number // calls)
                    start.record()
                    for _ in range(graphs):
                        graph.replay()
                    end.record()
                    end.synchronize()
                    return start.elapsed_time(end) / 1e3 * number / (graphs * calls)

                graph_cost, _ = measure(replay)
            except Exception as e:  # graphs are an extra: the eager figure stands without them
                graph_error = f"{type(e).__name__}: {e}"
        cost = min(c for c in (eager_cost, graph_cost) if c is not None)
        print(json.dumps({
            "layer": f"{n},{c},{h},{w},{k},{r},{s},{stride},{pad}",
            "device": name,
            "median_ms": cost * 1e3,
            "gflops": flops / cost / 1e9,
            "eager_gflops": flops / eager_cost / 1e9,
            "graph_gflops": flops / graph_cost / 1e9 if graph_cost else None,
            "graph_error": graph_error,
            "number": number,
            "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
