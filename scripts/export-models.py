#!/usr/bin/env python3
"""Exports the models "nobody here wrote" that the issue-17 benchmarks and sweeps run on.

Loom's own tests use ../shared/models and ../shared/transformers. This script makes more of the
architectures users bring: torchvision CNNs (EfficientNet, ShuffleNetV2, DenseNet, MobileNetV3,
GoogLeNet, Inception-v3, ResNet-50, ResNeXt, RegNet, MnasNet, ConvNeXt, Swin, DeepLabV3) and
Hugging Face transformers (BERT-base, DistilBERT, RoBERTa, GPT-2, a DeiT-shaped ViT, MobileViT),
and the sweep of architectures nobody here had tried before (Llama, GPT-NeoX, Phi, T5's encoder,
ALBERT at opset 14, Whisper's encoder, wav2vec2, CLIP's vision tower, Segformer-b0, DINOv2,
LRASPP, EfficientNetV2-S, Swin V2-T, AlexNet), batch 1, float32, static shapes. Most are exported like ../shared (TorchScript exporter, opset 17,
do_constant_folding=True); a few use opset 18 or 20 or the dynamo exporter, so the graphs vary in
the patterns those write (ReduceMean with axes as an input, Split with num_outputs, the Gelu op,
dynamo's decompositions).

Nothing is downloaded at run time: every model comes from its constructor or config with seeded
random weights (torch.manual_seed per model; no pretrained checkpoint). Parameters that the
constructors leave constant (norm scales 1, biases 0, ConvNeXt's layer scale 1e-6) get seeded
noise so that a kernel that drops one of them fails the output comparison, and the batch-norm
statistics are calibrated on a few seeded random batches (train mode, cumulative average), so
activations stay normalized as in a trained network instead of exploding through depth.

For each model NAME, OUT/NAME/ gets:
  model.onnx                 the model (weights inside the file)
  input.<input>.npy          seeded inputs: float32 images N(0,1); token ids in [0, vocab);
                             attention masks of ones, with padding at the end where info says
  ort_output.<output>.npy    ONNX Runtime's outputs for those inputs (CPU EP, default options)
  info.json                  source, exporter, opset, operator counts, inputs/outputs (names,
                             dtypes, shapes, files), parameter count, ORT-vs-PyTorch agreement,
                             package versions
Input and output names are sanitized for the file names ([A-Za-z0-9_-], others become _);
info.json maps each name to its file. OUT/MANIFEST.json collects every model's info.json.

Usage (needs torch, torchvision, transformers, onnx, onnxruntime, onnxscript and numpy, e.g. the
venv /work/bench-env; a few minutes a model on 2 cores, about 2 GB in all; never run in CI):
  python scripts/export-models.py --out /work/models-extra            # every model
  python scripts/export-models.py --out /work/models-extra --only gpt2 --only resnet50
  python scripts/export-models.py --list
bench/ort_compare.py takes OUT (or OUT/NAME) as a model list and reads info.json.
"""

import argparse
import collections
import contextlib
import io
import json
import os
import re
import sys
import time
import warnings

import numpy as np

# Imported lazily by main(): torch, torchvision, transformers, onnx, onnxruntime.
torch = None
nn = None


# ---------------------------------------------------------------------------------------------
# Model specs: each builds (module, example inputs as an ordered dict name -> numpy array,
# output names, source string). Exporter settings and seeds live in the MODELS table below.


def _image(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _tokens(vocab, seq, seed, pad=0):
    """Token ids in [0, vocab) and an attention mask of ones, `pad` zero positions at the end."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(1, seq), dtype=np.int64)
    mask = np.ones((1, seq), dtype=np.int64)
    if pad:
        mask[0, seq - pad:] = 0
    return ids, mask


def _wrap(model, keys, arg_names=None):
    """A module whose forward passes its inputs by name (arg_names) and returns the listed fields
    of the model's output (dict or tuple)."""

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, *args):
            if arg_names:
                out = self.inner(**dict(zip(arg_names, args)))
            else:
                out = self.inner(*args)
            if isinstance(out, torch.Tensor):
                return out
            if isinstance(out, (tuple, list)):
                return tuple(out[i] for i in keys)
            return tuple(out[k] for k in keys)

    return Wrapped()


def torchvision_cnn(name, size=224, **kwargs):
    def build(seed):
        import torchvision
        model = torchvision.models.get_model(name, weights=None, **kwargs)
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        source = f"torchvision.models.{name}(weights=None{', ' + args if args else ''})"
        return model, {"input": _image((1, 3, size, size), seed)}, ["logits"], source

    return build


def torchvision_segmentation(name, size):
    def build(seed):
        import torchvision
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None,
                                             num_classes=21, aux_loss=False)
        source = (f"torchvision.models.segmentation.{name}(weights=None, weights_backbone=None, "
                  "num_classes=21, aux_loss=False)['out']")
        return _wrap(model, ["out"]), {"input": _image((1, 3, size, size), seed)}, ["out"], source

    return build


def hf_text(cls_name, config_name, config, outputs, seq, pad=0):
    def build(seed):
        import transformers
        cfg = getattr(transformers, config_name)(**config)
        model = getattr(transformers, cls_name)(cfg)
        ids, mask = _tokens(cfg.vocab_size, seq, seed, pad)
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        source = f"transformers.{cls_name}({config_name}({args}))"
        if cfg.model_type == "roberta":
            # RoBERTa numbers positions from padding_idx + 1: ids equal to pad are legal but rare.
            ids[ids == cfg.pad_token_id] = cfg.pad_token_id + 1
        return (_wrap(model, outputs, ["input_ids", "attention_mask"]),
                {"input_ids": ids, "attention_mask": mask}, outputs, source)

    return build


def hf_vision(cls_name, config_name, config, outputs, size):
    def build(seed):
        import transformers
        cfg = getattr(transformers, config_name)(**config)
        model = getattr(transformers, cls_name)(cfg)
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        source = f"transformers.{cls_name}({config_name}({args}))"
        return (_wrap(model, outputs, ["pixel_values"]),
                {"pixel_values": _image((1, 3, size, size), seed)}, outputs, source)

    return build


def hf_audio(cls_name, config_name, config, outputs, input_name, shape):
    def build(seed):
        import transformers
        cfg = getattr(transformers, config_name)(**config)
        model = getattr(transformers, cls_name)(cfg)
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        source = f"transformers.{cls_name}({config_name}({args}))"
        return (_wrap(model, outputs, [input_name]), {input_name: _image(shape, seed)}, outputs,
                source)

    return build


BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, vocab_size=30522, max_position_embeddings=512)
DISTILBERT = dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072, vocab_size=30522,
                  max_position_embeddings=512)
ROBERTA = dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048,
               vocab_size=8192, max_position_embeddings=130, num_labels=3)
GPT2 = dict(n_embd=384, n_layer=6, n_head=6, vocab_size=8192, n_positions=256, use_cache=False,
            bos_token_id=0, eos_token_id=0)
DEIT_SMALL = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                  intermediate_size=1536, image_size=224, patch_size=16, num_labels=1000)
MOBILEVIT = dict(image_size=256, num_labels=1000)  # the config's defaults: MobileViT-S
# The sweep of architectures nobody here had tried (issue 17's re-check): small configs.
LLAMA = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=8192, max_position_embeddings=256, use_cache=False)
GPT_NEOX = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                num_attention_heads=4, rotary_pct=0.25, vocab_size=8192,
                max_position_embeddings=256, use_cache=False)
PHI = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
           partial_rotary_factor=0.5, vocab_size=8192, max_position_embeddings=256,
           use_cache=False)
T5_ENCODER = dict(d_model=256, d_kv=32, d_ff=1024, num_layers=4, num_heads=8, vocab_size=8192)
ALBERT = dict(embedding_size=128, hidden_size=384, num_hidden_layers=6, num_attention_heads=6,
              intermediate_size=1536, vocab_size=8192, max_position_embeddings=256)
WHISPER = dict(d_model=256, encoder_layers=4, encoder_attention_heads=4, encoder_ffn_dim=1024,
               decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=1024,
               num_mel_bins=80, max_source_positions=150, vocab_size=8192, num_labels=8)
WAV2VEC2 = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                intermediate_size=1024, conv_dim=(256,) * 7, num_conv_pos_embeddings=64,
                num_conv_pos_embedding_groups=16, vocab_size=32)
CLIP_VISION = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6,
                   num_attention_heads=6, image_size=224, patch_size=32)
SEGFORMER = dict(num_labels=21)  # the config's defaults: MiT-b0
DINOV2 = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6,
              num_attention_heads=6, image_size=224, patch_size=14)

# name -> (builder, exporter "torchscript" | "dynamo", opset). Seeds come from the name.
MODELS = collections.OrderedDict([
    ("efficientnet_b0", (torchvision_cnn("efficientnet_b0"), "torchscript", 17)),
    ("shufflenet_v2_x1_0", (torchvision_cnn("shufflenet_v2_x1_0"), "torchscript", 17)),
    ("densenet121", (torchvision_cnn("densenet121"), "torchscript", 17)),
    ("mobilenet_v3_small", (torchvision_cnn("mobilenet_v3_small"), "torchscript", 17)),
    # transform_input=True is what the pretrained weights select (per-channel re-normalization
    # written as Slice/Mul/Add/Concat in the graph); aux heads do not run in eval mode.
    ("googlenet", (torchvision_cnn("googlenet", aux_logits=False, transform_input=True,
                                   init_weights=True), "torchscript", 17)),
    ("inception_v3", (torchvision_cnn("inception_v3", size=299, aux_logits=False,
                                      transform_input=True, init_weights=True),
                      "torchscript", 17)),
    ("resnet50", (torchvision_cnn("resnet50"), "torchscript", 17)),
    ("resnext50_32x4d", (torchvision_cnn("resnext50_32x4d"), "torchscript", 18)),
    ("regnet_y_400mf", (torchvision_cnn("regnet_y_400mf"), "torchscript", 17)),
    ("mnasnet1_0", (torchvision_cnn("mnasnet1_0"), "torchscript", 17)),
    ("convnext_tiny", (torchvision_cnn("convnext_tiny"), "torchscript", 17)),
    ("swin_t", (torchvision_cnn("swin_t"), "torchscript", 17)),
    ("deeplabv3_mobilenet_v3_large",
     (torchvision_segmentation("deeplabv3_mobilenet_v3_large", 224), "torchscript", 17)),
    ("bert_base", (hf_text("BertModel", "BertConfig", BERT_BASE,
                           ["last_hidden_state", "pooler_output"], seq=128, pad=16),
                   "torchscript", 17)),
    ("distilbert_qa", (hf_text("DistilBertForQuestionAnswering", "DistilBertConfig", DISTILBERT,
                               ["start_logits", "end_logits"], seq=128, pad=24),
                       "torchscript", 18)),
    ("roberta_cls", (hf_text("RobertaForSequenceClassification", "RobertaConfig", ROBERTA,
                             ["logits"], seq=128, pad=8), "torchscript", 20)),
    ("gpt2", (hf_text("GPT2LMHeadModel", "GPT2Config", GPT2, ["logits"], seq=128),
              "torchscript", 17)),
    ("deit_small", (hf_vision("ViTForImageClassification", "ViTConfig", DEIT_SMALL, ["logits"],
                              size=224), "dynamo", 18)),
    ("mobilevit_s", (hf_vision("MobileViTForImageClassification", "MobileViTConfig", MOBILEVIT,
                               ["logits"], size=256), "torchscript", 17)),
    # Architectures nobody here had tried (docs/BENCHMARKS.md, "Architectures nobody here had
    # tried"): RMSNorm, rotary embeddings, causal masks, gated and parallel MLPs, relative
    # position buckets, factorized embeddings at opset 14, audio front ends (Conv1d, GroupNorm,
    # grouped positional convolution), quick-GELU, Segformer's reduced attention and Mix-FFN.
    ("llama", (hf_text("LlamaForCausalLM", "LlamaConfig", LLAMA, ["logits"], seq=128),
               "dynamo", 18)),
    ("gpt_neox", (hf_text("GPTNeoXForCausalLM", "GPTNeoXConfig", GPT_NEOX, ["logits"], seq=128),
                  "torchscript", 17)),
    ("phi", (hf_text("PhiForCausalLM", "PhiConfig", PHI, ["logits"], seq=128), "dynamo", 20)),
    ("t5_encoder", (hf_text("T5EncoderModel", "T5Config", T5_ENCODER, ["last_hidden_state"],
                            seq=128, pad=16), "torchscript", 17)),
    ("albert", (hf_text("AlbertModel", "AlbertConfig", ALBERT,
                        ["last_hidden_state", "pooler_output"], seq=128, pad=16),
                "torchscript", 14)),
    ("whisper_encoder_cls", (hf_audio("WhisperForAudioClassification", "WhisperConfig", WHISPER,
                                      ["logits"], "input_features", (1, 80, 300)),
                             "torchscript", 17)),
    ("wav2vec2", (hf_audio("Wav2Vec2Model", "Wav2Vec2Config", WAV2VEC2, ["last_hidden_state"],
                           "input_values", (1, 16000)), "torchscript", 17)),
    ("clip_vision", (hf_vision("CLIPVisionModel", "CLIPVisionConfig", CLIP_VISION,
                               ["last_hidden_state", "pooler_output"], size=224), "dynamo", 18)),
    ("segformer_b0", (hf_vision("SegformerForSemanticSegmentation", "SegformerConfig", SEGFORMER,
                                ["logits"], size=256), "torchscript", 17)),
    ("lraspp_mobilenet_v3_large",
     (torchvision_segmentation("lraspp_mobilenet_v3_large", 224), "torchscript", 17)),
    ("efficientnet_v2_s", (torchvision_cnn("efficientnet_v2_s", size=256), "torchscript", 18)),
    ("dinov2", (hf_vision("Dinov2Model", "Dinov2Config", DINOV2,
                          ["last_hidden_state", "pooler_output"], size=224), "dynamo", 18)),
    ("swin_v2_t", (torchvision_cnn("swin_v2_t", size=256), "torchscript", 17)),
    ("alexnet", (torchvision_cnn("alexnet"), "torchscript", 17)),
])


# ---------------------------------------------------------------------------------------------
# Weights: seeded, no constant parameter, calibrated batch-norm statistics.


def _seed_for(name):
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % (2**31)


def randomize_constant_parameters(model, gen):
    """Adds N(0, 0.1^2) noise to every float parameter whose elements are all equal."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dtype.is_floating_point and p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))


def calibrate_batch_norm(model, inputs, gen, batches=4, batch=4):
    """Cumulative-average BN statistics over a few seeded random batches shaped like `inputs`."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            feeds = []
            for x in inputs.values():
                if x.dtype == np.float32:
                    feeds.append(torch.randn((batch,) + x.shape[1:], generator=gen))
                else:
                    feeds.append(torch.from_numpy(np.repeat(x, batch, axis=0)))
            model(*feeds)
    model.eval()
    return len(bns)


# ---------------------------------------------------------------------------------------------
# Export, reference outputs, info.json.


def export(model, inputs, output_names, path, exporter, opset):
    args = tuple(torch.from_numpy(x) for x in inputs.values())
    log = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(log):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(model, args, path, dynamo=False, opset_version=opset,
                              do_constant_folding=True, input_names=list(inputs),
                              output_names=output_names)
            return f"torch.onnx.export(dynamo=False, opset_version={opset}, " \
                   "do_constant_folding=True), static shapes, batch 1"
        program = torch.onnx.export(model, args, dynamo=True, opset_version=opset,
                                    input_names=list(inputs), output_names=output_names,
                                    optimize=True)
        program.save(path)
        return f"torch.onnx.export(dynamo=True, opset_version={opset}, optimize=True), " \
               "static shapes, batch 1"


def file_key(name):
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def op_counts(model_proto):
    counts = collections.Counter()
    for node in model_proto.graph.node:
        default = node.domain in ("", "ai.onnx")
        counts[node.op_type if default else f"{node.domain}.{node.op_type}"] += 1
    return dict(counts.most_common())


def compare(ref, got):
    err = max(float(np.max(np.abs(r.astype(np.float64) - g))) for r, g in zip(ref, got))
    scale = max(float(np.max(np.abs(r))) for r in ref)
    return {"max_abs": err, "max_abs_ref": scale, "max_abs_over_max_ref": err / scale if scale
            else err, "pass_1e-3_relative_to_output_scale": err <= 1e-3 * scale}


def export_one(name, out_dir):
    import onnx
    import onnxruntime as ort

    builder, exporter, opset = MODELS[name]
    seed = _seed_for(name)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    t0 = time.time()
    model, inputs, output_names, source = builder(seed)
    model.eval()
    randomize_constant_parameters(model, gen)
    bn = calibrate_batch_norm(model, inputs, gen)

    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "model.onnx")
    with torch.no_grad():
        torch_out = model(*(torch.from_numpy(x) for x in inputs.values()))
        if isinstance(torch_out, torch.Tensor):
            torch_out = (torch_out,)
        torch_out = [t.numpy() for t in torch_out]
        how = export(model, inputs, output_names, path, exporter, opset)

    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name] for i in sess.get_inputs()}
    ort_out = sess.run(None, feeds)

    info = {"name": name, "file": "model.onnx", "source": source, "exporter": how, "seed": seed,
            "batch_norm_layers_calibrated": bn,
            "parameter_count": int(sum(p.numel() for p in model.parameters())),
            "bytes": os.path.getsize(path), "inputs": [], "outputs": []}
    for name_, x in inputs.items():
        f = f"input.{file_key(name_)}.npy"
        np.save(os.path.join(folder, f), x)
        info["inputs"].append({"name": name_, "dtype": str(x.dtype), "shape": list(x.shape),
                               "file": f})
    if any(i["dtype"] == "int64" for i in info["inputs"]) and "attention_mask" in inputs:
        info["attention_mask_zeros"] = int((inputs["attention_mask"] == 0).sum())
    for meta, y in zip(sess.get_outputs(), ort_out):
        f = f"ort_output.{file_key(meta.name)}.npy"
        np.save(os.path.join(folder, f), y)
        info["outputs"].append({"name": meta.name, "dtype": str(y.dtype), "shape": list(y.shape),
                                "file": f})
    info["ops"] = op_counts(proto)
    info["node_count"] = len(proto.graph.node)
    info["opset"] = {(o.domain or "ai.onnx"): o.version for o in proto.opset_import}
    info["ort_vs_torch"] = compare(torch_out, ort_out)
    info["versions"] = versions()
    info["export_seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(folder, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def versions():
    import onnx
    import onnxruntime
    import torchvision
    import transformers
    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", help="output folder (one subfolder per model)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="export only this model (repeatable)")
    p.add_argument("--list", action="store_true", help="print the model names and exit")
    args = p.parse_args()
    if args.list:
        for name, (_, exporter, opset) in MODELS.items():
            print(f"{name:32s} {exporter} opset {opset}")
        return 0
    if not args.out:
        p.error("--out DIR is required")
    unknown = [n for n in args.only if n not in MODELS]
    if unknown:
        p.error(f"unknown model(s): {', '.join(unknown)} (--list prints the names)")

    global torch, nn
    import torch as torch_module
    torch = torch_module
    nn = torch.nn
    torch.set_num_threads(2)

    os.makedirs(args.out, exist_ok=True)
    failed = []
    for name in args.only or list(MODELS):
        print(f"== {name}", file=sys.stderr, flush=True)
        try:
            info = export_one(name, args.out)
        except Exception as e:  # one model's failure must not stop the others
            failed.append(name)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"export-models: error: {name}: {type(e).__name__}: {first}", file=sys.stderr)
            continue
        c = info["ort_vs_torch"]
        print(f"   {info['node_count']} nodes, opset {info['opset']}, "
              f"{info['bytes'] / 1e6:.1f} MB, ORT vs torch {c['max_abs_over_max_ref']:.2e} "
              f"of the output scale, {info['export_seconds']} s", file=sys.stderr, flush=True)

    manifest = {}
    for name in MODELS:
        f = os.path.join(args.out, name, "info.json")
        if os.path.exists(f):
            with open(f) as fh:
                manifest[name] = json.load(fh)
    with open(os.path.join(args.out, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    if failed:
        print(f"export-models: error: {len(failed)} model(s) failed: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
