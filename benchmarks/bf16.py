"""bf16 on the CPU: Keras (TensorFlow, XLA, ``mixed_bfloat16``) beside fp32 and beside torch's bf16 autocast.

``python -m benchmarks.bf16 [--quick] [--models vgg11_bn] [--rounds 3]``

One child process holds every cell (torch imported first, then TensorFlow),
all on the same random weights (every tensor random, BN statistics included):

- torch eager fp32 (torchvision's model, ``inference_mode``): the reference;
- torch eager bf16 (``torch.autocast("cpu", torch.bfloat16)``);
- Keras XLA fp32 (``tf.function(jit_compile=True)`` around the model);
- Keras XLA bf16 (the same model built under ``mixed_bfloat16``: bf16
  activations and matmuls, fp32 variables, logits cast back to fp32);
- both Keras models again under a plain ``tf.function`` (TensorFlow's graph
  runtime, whose CPU kernels are oneDNN's where oneDNN is on: its bf16
  convolutions use AVX-512 BF16 or AMX).

Speed: latency at batch 1 (median of ``--calls``) and images/s at batch 8,
in interleaved rounds (the order reversed every other round), ratios to torch
fp32 per round. Accuracy, on the six photos the exports are judged on and on
the fixed noise batch: max |logits - torch fp32| / max |torch fp32| and top-1 /
top-5 agreement with torch fp32, for both bf16 paths, so the Keras bf16 error
is read against torch's own bf16 error. bf16 keeps 8 bits of mantissa (relative
step 2**-8 = 3.9e-3), so either path is expected around 1e-2.

The CPU decides the result: bf16 arithmetic runs natively with AVX-512 BF16
(dot products) or AMX (tiles); without either, frameworks emulate it.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import Option, Section, child_json, command, rng, say, summarize, table

__all__ = ["main"]

CHILD = r"""
import json, os, sys, time
cfg = json.loads(sys.argv[1])
import numpy as np
import torch, torchvision  # before TensorFlow
import keras
import tensorflow as tf
import vgg_keras, vgg_torch
from benchmarks.harness import timed, say
from parity.convert.random_weights import randomized_state_dict
from parity.convert.weight_arrays import assign_keras_weights, convert_state_dict
from parity.core.config import get_config
from parity.export.check import photo_batch, reference_inputs
torch.set_num_threads(cfg["threads"])
config = get_config(cfg["model"])
state = randomized_state_dict(config, seed=0)
tm = vgg_torch.build_vgg(config, init_weights=False).eval()
tm.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
arrays = convert_state_dict(state, config)
def keras_model(policy):
    keras.config.set_dtype_policy(policy)
    try:
        m = vgg_keras.build_vgg(config, include_top=True, classifier_activation=None, input_shape=(224, 224, 3))
    finally:
        keras.config.set_dtype_policy("float32")
    assign_keras_weights(m, arrays)
    return m
km32, km16 = keras_model("float32"), keras_model("mixed_bfloat16")
xla32 = tf.function(lambda x: km32(x, training=False), jit_compile=True)
xla16 = tf.function(lambda x: tf.cast(km16(x, training=False), tf.float32), jit_compile=True)
graph32 = tf.function(lambda x: km32(x, training=False))
graph16 = tf.function(lambda x: tf.cast(km16(x, training=False), tf.float32))
def torch_run(x, bf16):
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        return tm(torch.from_numpy(x)).float().numpy()
cells = {
    "torch eager fp32": lambda x: torch_run(x, False),
    "torch eager bf16 autocast": lambda x: torch_run(x, True),
    "keras XLA fp32": lambda x: xla32(tf.constant(x.transpose(0, 2, 3, 1))).numpy(),
    "keras XLA mixed_bfloat16": lambda x: xla16(tf.constant(x.transpose(0, 2, 3, 1))).numpy(),
    "keras tf.function fp32": lambda x: graph32(tf.constant(x.transpose(0, 2, 3, 1))).numpy(),
    "keras tf.function mixed_bfloat16": lambda x: graph16(tf.constant(x.transpose(0, 2, 3, 1))).numpy(),
}
sets = {k: v for k, v in reference_inputs(config, (224, 224)).items()}
accuracy = {}
for name, x in sets.items():
    ref = cells["torch eager fp32"](x)
    for cell, fn in cells.items():
        got = fn(x)
        top5r, top5g = np.argsort(-ref, 1)[:, :5], np.argsort(-got, 1)[:, :5]
        accuracy.setdefault(cell, {})[name] = {
            "max_rel": float(np.abs(got - ref).max() / np.abs(ref).max()),
            "top1": float(np.mean(top5r[:, 0] == top5g[:, 0])),
            "top5_overlap": float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5r, top5g)])),
        }
x8 = np.random.default_rng(0).standard_normal((8, 3, 224, 224), dtype=np.float32)
samples = {b: {c: [] for c in cells} for b in (1, 8)}
for batch, calls in ((1, cfg["calls"]), (8, 1)):
    x = x8[:batch]
    for fn in cells.values():
        fn(x)  # warm-up and compilation at this batch
    for r in range(cfg["rounds"]):
        order = list(cells) if r % 2 == 0 else list(cells)[::-1]
        for cell in order:
            samples[batch][cell].append([timed(lambda: cells[cell](x), 1)["wall"] for _ in range(calls)])
        say(f"  {cfg['model']} batch {batch}: round {r + 1}/{cfg['rounds']}")
versions = {"torch": torch.__version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")}
print(json.dumps({"accuracy": accuracy, "samples": samples, "versions": versions}))
"""


def measure(section: Section) -> dict[str, Any]:
    """One child per model; returns ``{model: {"accuracy", "rows", "versions"}}``."""
    args, out = section.args, {}
    for model in args.models:
        cfg = {"model": model, "rounds": args.rounds, "calls": args.calls, "threads": args.threads}
        got = child_json(section, CHILD, cfg)
        if "error" in got:
            out[model] = got
            continue
        samples = {int(b): v for b, v in got["samples"].items()}
        base1 = [statistics.median(s) for s in samples[1]["torch eager fp32"]]
        base8 = [8 / s[0] for s in samples[8]["torch eager fp32"]]
        rows = []
        for cell in samples[1]:
            lat = [statistics.median(s) for s in samples[1][cell]]
            thr = [8 / s[0] for s in samples[8][cell]]
            rows.append(
                {
                    "cell": cell,
                    "latency_ms": summarize([v * 1000 for v in lat]),
                    "latency_vs_torch": summarize([a / b for a, b in zip(lat, base1)]),
                    "images_per_s": summarize(thr),
                    "throughput_vs_torch": summarize([a / b for a, b in zip(thr, base8)]),
                }
            )
        out[model] = {"accuracy": got["accuracy"], "rows": rows, "versions": got["versions"]}
        say(f"  {model}: done")
    return out


def render(results: dict[str, Any]) -> list[str]:
    """Speed and accuracy tables per model."""
    lines: list[str] = []
    for model, r in results["bf16"].items():
        if "error" in r:
            lines += ["", f"{model}: {r['error']}"]
            continue
        v = r["versions"]
        lines += [
            "",
            f"{model}, 224x224, torch {v['torch']}, TensorFlow {v['tensorflow']} (oneDNN {v['onednn']}), "
            f"Keras {v['keras']}; ratios to torch eager fp32 per round, median (min–max):",
            "",
        ]
        rows = [
            [x["cell"], rng(x["latency_ms"], ".0f"), rng(x["latency_vs_torch"]), rng(x["images_per_s"], ".1f"),
             rng(x["throughput_vs_torch"])]
            for x in r["rows"]
        ]  # fmt: skip
        lines += table(["path", "latency b1, ms", "÷ torch fp32", "img/s b8", "÷ torch fp32"], "lrrrr", rows)
        lines += ["", "Against torch eager fp32 (max |diff| / max |torch fp32|; top-1; top-5 overlap):", ""]
        rows = []
        for cell, sets in r["accuracy"].items():
            rows.append(
                [cell] + [f"{s['max_rel']:.1e}; {s['top1']:.0%}; {s['top5_overlap']:.0%}" for s in sets.values()]
            )
        names = list(next(iter(r["accuracy"].values())))
        lines += table(["path", *names], "l" + "r" * len(names), rows)
    return lines


_OPTIONS = [
    Option("--models", "architectures", ["vgg11_bn", "vgg16"], ["vgg11_bn"], type=str, many=True),
    Option("--rounds", "interleaved rounds", 5, 2),
    Option("--calls", "batch-1 calls per cell and round", 5, 3),
    Option("--threads", "torch threads (TensorFlow uses all cores)", 2, 2),
]

main = command(__doc__, {"bf16": measure}, render, _OPTIONS)

if __name__ == "__main__":
    sys.exit(main())
