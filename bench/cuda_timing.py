"""Timing of PyTorch work on a GPU, shared by the GPU peers of Loom (cudnn_conv.py,
torch_model_latency.py), with the protocol of Loom's CUDA measurer: CUDA events around `number`
back-to-back calls, `number` grown until one repeat lasts min_repeat_ms, median of `repeat`
repeats. Each call is timed eagerly and as a CUDA graph replaying it, because at batch 1 a small
kernel can be shorter than PyTorch's Python-side launch path; the graph leaves only the kernels.
Imports torch lazily, so that the scripts' --help works without a GPU stack.
"""
import statistics
import sys


def setup(device, script):
    """torch with cuDNN picking its algorithms and TF32 off, and the device; exits without one."""
    import torch

    if not torch.cuda.is_available():
        print(f"{script}: error: PyTorch sees no CUDA device", file=sys.stderr)
        sys.exit(1)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch, torch.device(device)


def _seconds_per_call(torch, run_n, repeat, min_repeat_ms):
    """Median seconds per call of run_n(number), which runs `number` calls."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    number, costs = 1, []
    while len(costs) < repeat:
        start.record()
        run_n(number)
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end)
        if ms < min_repeat_ms and number < (1 << 20):
            number = max(number + 1, int(number * min(min_repeat_ms / max(ms, 1e-3) * 1.2, 100.0)))
            continue
        costs.append(ms / 1e3 / number)
    return statistics.median(costs), number


def time_call(torch, dev, fn, repeat, min_repeat_ms, graph_calls=20, warmup=5):
    """Times fn() eagerly and as a CUDA graph of `graph_calls` calls, after `warmup` untimed calls
    (cuDNN's algorithm search runs on the first ones). Returns a dict: eager_s, graph_s (None when
    capture failed, with graph_error), best_s, number (eager calls per repeat). Call under
    torch.no_grad()."""

    def eager(n):
        for _ in range(n):
            fn()

    eager(warmup)
    torch.cuda.synchronize(dev)
    eager_s, number = _seconds_per_call(torch, eager, repeat, min_repeat_ms)
    graph_s, graph_error = None, None
    try:
        stream = torch.cuda.Stream(dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream(dev).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(graph_calls):
                fn()
        graph.replay()
        torch.cuda.synchronize(dev)

        def replay(n):  # n graphs: n * graph_calls calls
            for _ in range(n):
                graph.replay()

        per_graph, _ = _seconds_per_call(torch, replay, repeat, min_repeat_ms)
        graph_s = per_graph / graph_calls
    except Exception as e:  # the graph is an extra: the eager figure stands without it
        graph_error = f"{type(e).__name__}: {e}"
    best = min(v for v in (eager_s, graph_s) if v is not None)
    return {"eager_s": eager_s, "graph_s": graph_s, "graph_error": graph_error, "best_s": best,
            "number": number}
