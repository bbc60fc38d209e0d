#!/usr/bin/env python3
"""Times a model's inference on a GPU with PyTorch, the peer of `loom bench MODEL --target cuda`.

Models: a torchvision model by name (resnet18, mobilenet_v2, ...), or one of the transformers of
../shared/transformers built from the same constructors with the configs of its README:
vit_tiny (torchvision VisionTransformer, patch 16, 6 layers, 3 heads, hidden 192, MLP 768; input
[1,3,224,224]) and bert_small (transformers BertModel, hidden 256, 4 layers, 4 heads,
intermediate 1024, vocab 1024, 128 positions; input_ids and an all-ones attention_mask [1,128],
the graph's output last_hidden_state). Weights are random: latency does not depend on them.
Batch 1, fp32, eval mode, cuDNN picking its algorithms (cudnn.benchmark), TF32 off. Timing
(cuda_timing.py): CUDA events around back-to-back forward passes, their count grown until one
repeat lasts --min-repeat-ms, median of --repeat repeats; once eagerly and once replaying a CUDA
graph of the forward pass (no Python launch overhead). Prints one JSON object per model on stdout.

  python3 bench/torch_model_latency.py --model resnet18 --model mobilenet_v2 --model vit_tiny \
      --model bert_small
"""
import argparse
import json
import sys

import cuda_timing


def build(torch, torchvision, name, dev):
    """The model in eval mode on `dev` and a call running it on a fixed batch-1 input."""
    if name == "vit_tiny":
        from torchvision.models.vision_transformer import VisionTransformer
        model = VisionTransformer(image_size=224, patch_size=16, num_layers=6, num_heads=3,
                                  hidden_dim=192, mlp_dim=768).eval().to(dev)
        x = torch.randn(1, 3, 224, 224, device=dev)
        return model, lambda: model(x)
    if name == "bert_small":
        import transformers
        config = transformers.BertConfig(hidden_size=256, num_hidden_layers=4,
                                         num_attention_heads=4, intermediate_size=1024,
                                         vocab_size=1024, max_position_embeddings=128)
        model = transformers.BertModel(config, add_pooling_layer=False).eval().to(dev)
        ids = torch.randint(0, 1024, (1, 128), device=dev)
        mask = torch.ones(1, 128, dtype=torch.int64, device=dev)
        return model, lambda: model(input_ids=ids, attention_mask=mask).last_hidden_state
    if not hasattr(torchvision.models, name):
        raise SystemExit(f"torch_model_latency.py: error: unknown model '{name}' (a torchvision "
                         "model, vit_tiny or bert_small)")
    model = getattr(torchvision.models, name)(weights=None).eval().to(dev)
    x = torch.randn(1, 3, 224, 224, device=dev)
    return model, lambda: model(x)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True,
                   help="torchvision model name, vit_tiny or bert_small")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--min-repeat-ms", type=float, default=100.0)
    p.add_argument("--device", default="cuda:0")
    args = p.parse_args()

    torch, dev = cuda_timing.setup(args.device, "torch_model_latency.py")
    import torchvision

    for name in args.model:
        model, call = build(torch, torchvision, name, dev)
        with torch.no_grad():
            t = cuda_timing.time_call(torch, dev, call, args.repeat, args.min_repeat_ms,
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
