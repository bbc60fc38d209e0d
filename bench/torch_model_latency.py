#!/usr/bin/env python3
"""Times a torchvision model's inference on a GPU, the peer of `loom bench zoo:NAME --target cuda`.

Batch 1, fp32, eval mode, cuDNN picking its algorithms (cudnn.benchmark), TF32 off. Timing: CUDA
events around back-to-back forward passes, their count grown until one repeat lasts
--min-repeat-ms, median of --repeat repeats; once eagerly and once replaying a CUDA graph of the
forward pass (no Python launch overhead). Prints one JSON object per model on stdout.

  python3 bench/torch_model_latency.py --model resnet18 --model mobilenet_v2
"""
import argparse
import json
import statistics
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="torchvision model name")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--min-repeat-ms", type=float, default=100.0)
    p.add_argument("--device", default="cuda:0")
    args = p.parse_args()

    import torch  # imported late so that --help works without a GPU stack
    import torchvision

    if not torch.cuda.is_available():
        print("torch_model_latency.py: error: PyTorch sees no CUDA device", file=sys.stderr)
        return 1
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device(args.device)
    for name in args.model:
        model = getattr(torchvision.models, name)(weights=None).eval().to(dev)
        x = torch.randn(1, 3, 224, 224, device=dev)
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)

        def measure(run_n):
            number, costs = 1, []
            while len(costs) < args.repeat:
                start.record()
                run_n(number)
                end.record()
                end.synchronize()
                ms = start.elapsed_time(end)
                if ms < args.min_repeat_ms and number < (1 << 16):
                    number = max(number + 1, int(number * min(args.min_repeat_ms / max(ms, 1e-3) * 1.2, 100)))
                    continue
                costs.append(ms / number)
            return statistics.median(costs)

        with torch.no_grad():
            for _ in range(5):
                model(x)
            torch.cuda.synchronize(dev)

            def eager(n):
                for _ in range(n):
                    model(x)

            eager_ms = measure(eager)
            graph_ms, graph_error = None, None
            try:
                stream = torch.cuda.Stream(dev)
                stream.wait_stream(torch.cuda.current_stream(dev))
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        model(x)
                torch.cuda.current_stream(dev).wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    model(x)

                def replay(n):
                    for _ in range(n):
                        graph.replay()

                graph_ms = measure(replay)
            except Exception as e:  # the eager figure stands without it
                graph_error = f"{type(e).__name__}: {e}"
        print(json.dumps({
            "model": name,
            "device": torch.cuda.get_device_name(dev),
            "eager_ms": eager_ms,
            "graph_ms": graph_ms,
            "graph_error": graph_error,
            "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
