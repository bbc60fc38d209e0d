#!/usr/bin/env python3
"""Times a torchvision model's inference on a GPU, the peer of `loom bench zoo:NAME --target cuda`.

Batch 1, fp32, eval mode, cuDNN picking its algorithms (cudnn.benchmark), TF32 off. Timing
(cuda_timing.py): CUDA events around back-to-back forward passes, their count grown until one
repeat lasts --min-repeat-ms, median of --repeat repeats; once eagerly and once replaying a CUDA
graph of the forward pass (no Python launch overhead). Prints one JSON object per model on stdout.

  python3 bench/torch_model_latency.py --model resnet18 --model mobilenet_v2
"""
import argparse
import json
import sys

import cuda_timing


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="torchvision model name")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--min-repeat-ms", type=float, default=100.0)
    p.add_argument("--device", default="cuda:0")
    args = p.parse_args()

    torch, dev = cuda_timing.setup(args.device, "torch_model_latency.py")
    import torchvision

    for name in args.model:
        model = getattr(torchvision.models, name)(weights=None).eval().to(dev)
        x = torch.randn(1, 3, 224, 224, device=dev)
        with torch.no_grad():
            t = cuda_timing.time_call(torch, dev, lambda: model(x), args.repeat, args.min_repeat_ms,
                                      graph_calls=1)
        print(json.dumps({
            "model": name,
            "device": torch.cuda.get_device_name(dev),
            "eager_ms": t["eager_s"] * 1e3,
            "graph_ms": t["graph_s"] * 1e3 if t["graph_s"] else None,
            "graph_error": t["graph_error"],
            "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
