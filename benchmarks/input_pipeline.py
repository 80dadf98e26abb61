"""Throughput of the masked-item tf.data pipeline at max_len 50, beside keras-nlp's stock generator.

Sequences: Beauty's leave-one-out training histories (sliding windows of 50), or
synthetic ones when the folder is absent.  Both rows run the same pipeline
(shuffle, batch 256, parallel map, prefetch); only the mask generator differs.
The first pass is a warm-up; the figure is the median of the timed passes.
Target: at least 50,000 sequences per second on 2 cores.

    python benchmarks/input_pipeline.py [--passes 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import data_dir, machine, median, write_result  # noqa: E402

import tfrec  # noqa: E402,F401
import keras_nlp  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfrec import contract  # noqa: E402
from tfrec.data import dataset, inputs, loaders, schema  # noqa: E402
from tfrec.data.synthetic import generate_synthetic  # noqa: E402

MAX_LEN = 50
BATCH = 256


def sequences() -> tuple[str, list[np.ndarray], int]:
    path = os.path.join(data_dir(), "amazon-beauty")
    raw = loaders.load("amazon-s3rec", path) if os.path.isdir(path) else generate_synthetic(20_000, 10_000, seed=0)
    name = "amazon-beauty" if os.path.isdir(path) else "synthetic"
    with tempfile.TemporaryDirectory() as tmp:
        d = dataset.prepare(raw, os.path.join(tmp, "d"))
        _, seqs = inputs.loo_sequences(d, schema.TRAIN)
        vocab = len(d.item_vocab)
    return name, inputs.sliding_windows(seqs, MAX_LEN), vocab


def stock_pipeline(padded: np.ndarray, vocab: int) -> tf.data.Dataset:
    gen = keras_nlp.layers.MaskedLMMaskGenerator(
        vocabulary_size=vocab, mask_selection_rate=0.2, mask_token_id=schema.MASK_ID,
        mask_selection_length=10, unselectable_token_ids=[schema.PAD_ID], mask_token_rate=1.0, random_token_rate=0.0)

    def to_batch(batch):
        out = gen(batch)
        return ({contract.ITEM_INDICES: out["token_ids"], contract.PADDING_MASK: batch != 0,
                 contract.MASK_POSITIONS: out["mask_positions"]},
                out["mask_ids"], out["mask_weights"])

    ds = tf.data.Dataset.from_tensor_slices(padded).shuffle(len(padded), seed=0).batch(BATCH)
    return ds.map(to_batch, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def throughput(ds: tf.data.Dataset, passes: int) -> list[float]:
    rates = []
    for i in range(passes + 1):
        n = 0
        t = time.perf_counter()
        for _, labels, _ in ds:
            n += int(tf.nest.flatten(labels)[0].shape[0])
        if i:  # pass 0 traces the graph: warm-up
            rates.append(n / (time.perf_counter() - t))
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    name, seqs, vocab = sequences()
    padded = inputs.pad_left(seqs, MAX_LEN)
    ours = throughput(inputs.masked_item_dataset(padded, MAX_LEN, vocab, batch_size=BATCH, mask_rate=0.2, seed=0), args.passes)
    ours_last = throughput(inputs.masked_item_dataset(padded, MAX_LEN, vocab, batch_size=BATCH, mask_rate=0.2,
                                                      mask_last_rate=0.1, seed=0), args.passes)
    stock = throughput(stock_pipeline(padded, vocab), args.passes)
    result = {
        "sequences": len(padded), "max_len": MAX_LEN, "batch_size": BATCH, "passes": args.passes,
        "tfrec_seq_per_s": median(ours), "tfrec_mask_last_seq_per_s": median(ours_last),
        "stock_generator_seq_per_s": median(stock), "speedup_vs_stock": median(ours) / median(stock),
        "target_seq_per_s": 50_000, "meets_target": median(ours) >= 50_000,
    }
    write_result("input_pipeline", name, result)
    print(f"machine: {machine()}; {name}: {len(padded):,} sequences of max_len {MAX_LEN}, batch {BATCH}; "
          f"median of {args.passes} passes after a warm-up\n")
    print("| pipeline | sequences / s | vs stock |")
    print("|---|---|---|")
    print(f"| keras-nlp MaskedLMMaskGenerator, stock selector (baseline) | {result['stock_generator_seq_per_s']:,.0f} | 1.00x |")
    print(f"| tfrec masked_item_dataset (seeded vectorised selector) | {result['tfrec_seq_per_s']:,.0f} | {result['speedup_vs_stock']:.2f}x |")
    print(f"| tfrec masked_item_dataset, mask_last_rate 0.1 | {result['tfrec_mask_last_seq_per_s']:,.0f} | "
          f"{result['tfrec_mask_last_seq_per_s'] / result['stock_generator_seq_per_s']:.2f}x |")
    print(f"\ntarget >= 50,000 seq/s: {'met' if result['meets_target'] else 'NOT met'}")
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
