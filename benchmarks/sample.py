"""Sampling at the paper's size, cold and warm, side by side in one run: the official naive
sampler's cost (one forward pass per pixel), the fast sampler's steady batches, the codec's
encode and decode of the same images, and a user's one cold `sample.py` run, with where its
time goes.

    python benchmarks/sample.py                        # paper size, batch 16, random weights
    python benchmarks/sample.py --sizes=small --fast_batches=2
    python benchmarks/sample.py --xla --profile        # also jit_compile=True; op time by type

Prints JSON. For each size, after a first call of each (`first_seconds`), --fast_batches
rounds of: a forward pass over a batch (median of --naive_iterations), a batch of the fast
sampler on the default path (pixel_cnn_pp.sample; which path it took in `path`), and the
codec's compress(verify=False) and decompress of the sampler's own images. Ratios are the
medians of the rounds' ratios (the machine's load moves every figure): `speedup` is the
naive sampler's cost (the forward pass times H * W: every naive step is one forward pass
plus a draw) over the fast batch; `encode_vs_sampler`, `decode_vs_sampler`. With --profile,
the op time by TensorFlow op type of one more batch (summed over threads); `cold`: `sample.py --checkpoint=M.keras
--num_samples=16` in a fresh process (wall seconds, min of 2) less a bare `import
tensorflow, pixel_cnn_pp` (min of 2), its ratio to the steady median, and `phases`: a
fresh process's import, load, trace (the sampler made and its row step traced), first
batch (the rest of the first call: graph building, first run) and second batch. The model
is a random PixelCNNPP, initialised on uniform noise and saved as a .keras file.
"""

import time

_START = time.perf_counter()  # noqa: E402 (a cold start's import, timed from here)
import json  # noqa: E402
import os
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

from absl import app, flags
import keras
import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))
import pixel_cnn_pp  # noqa: E402
from pixel_cnn_pp import PixelCNNPP, sampling  # noqa: E402
import profiling  # noqa: E402

_IMPORTED = time.perf_counter()

SIZES = {'paper': dict(nr_resnet=5, nr_filters=160, nr_logistic_mix=10),
         'small': dict(nr_resnet=2, nr_filters=64, nr_logistic_mix=5)}
flags.DEFINE_list('sizes', ['paper'], 'Model sizes to time: %s' % ', '.join(SIZES))
flags.DEFINE_integer('batch_size', 16, 'Images per batch')
flags.DEFINE_integer('image_size', 32, 'Height and width')
flags.DEFINE_integer('naive_iterations', 3, 'Forward passes timed (median)')
flags.DEFINE_integer('fast_batches', 3, 'Fast batches, and codec rounds, timed after the first (medians)')
flags.DEFINE_boolean('profile', False, 'Op time by type of one more fast batch')
flags.DEFINE_boolean('xla', False, 'Also time jit_compile=True')
flags.DEFINE_boolean('cold', True, 'Time sample.py in fresh processes')
flags.DEFINE_string('phases_of', None, 'Internal: time the phases of a cold start of this .keras file')
FLAGS = flags.FLAGS


def seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary(times):
    return dict(median=round(float(np.median(times)), 2), min=round(min(times), 2))


def phases(path, batch_size):
    """A cold start's phases in this (fresh) process."""
    start = time.perf_counter()
    model = pixel_cnn_pp.load(path)
    out = dict(import_=_IMPORTED - _START, load=time.perf_counter() - start)
    start = time.perf_counter()
    s = sampling.sampler(model, model.image_shape, False)
    s.start.get_concrete_function()
    s.row.get_concrete_function()
    out['trace'] = time.perf_counter() - start
    out['first_batch'], out['second_batch'] = seconds(lambda: pixel_cnn_pp.sample(model, batch_size, seed=1), 2)
    return {k: round(v, 2) for k, v in out.items()}


def fresh(args, repeats=2):
    """Min wall seconds of a fresh Python process running args, and its last stdout."""
    times, out = [], None
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2')
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run([sys.executable] + args, env=env, capture_output=True, text=True, check=True).stdout
        times.append(time.perf_counter() - start)
    return min(times), out


def bench(size, folder):
    keras.utils.set_random_seed(0)
    B, (H, W, C) = FLAGS.batch_size, (FLAGS.image_size, FLAGS.image_size, 3)
    model = PixelCNNPP(dropout_p=0., image_shape=(H, W, C), **SIZES[size])
    model(np.random.default_rng(0).uniform(-1, 1, (B, H, W, C)).astype(np.float32), init=True)
    path = os.path.join(folder, size + '.keras')
    model.save(path)
    x = tf.zeros((B, H, W, C))
    forward = tf.function(lambda x: model(x))
    forward(x).numpy()
    result = dict(model=SIZES[size], batch_size=B, image_size=H)
    paths = [('fast', None)] + ([('fast_xla', True)] if FLAGS.xla else [])
    for name, jit in paths:
        first = seconds(lambda: pixel_cnn_pp.sample(model, B, seed=0, jit_compile=jit), 1)[0]
        result[name] = dict(path=sampling.path(model, B, (H, W, C), jit), first_seconds=round(first, 1))
    images = pixel_cnn_pp.sample(model, B, seed=2)
    data = pixel_cnn_pp.compress(model, images, verify=False)  # (constriction's import)
    # rounds of each, so that the ratios compare times a round apart (the machine's load
    # moves them all); the forward pass's median of --naive_iterations in each round
    rounds = {k: [] for k in ['forward'] + [name for name, _ in paths] + ['encode', 'decode']}
    for r in range(FLAGS.fast_batches):
        rounds['forward'].append(float(np.median(seconds(lambda: forward(x).numpy(), FLAGS.naive_iterations))))
        for name, jit in paths:
            rounds[name] += seconds(lambda: pixel_cnn_pp.sample(model, B, seed=1 + r, jit_compile=jit), 1)
        rounds['encode'] += seconds(lambda: pixel_cnn_pp.compress(model, images, verify=False), 1)
        rounds['decode'] += seconds(lambda: pixel_cnn_pp.decompress(model, data), 1)

    def ratio(a, b, scale=1.):
        return round(float(np.median(np.multiply(rounds[a], scale) / np.array(rounds[b]))), 2)
    result.update(forward_seconds=summary(rounds['forward']),
                  naive_seconds=round(float(np.median(rounds['forward'])) * H * W, 1))
    for name, jit in paths:
        result[name].update(seconds=summary(rounds[name]), speedup=ratio('forward', name, H * W))
        if FLAGS.profile:
            times = profiling.op_time_by_type(lambda: pixel_cnn_pp.sample(model, B, seed=1, jit_compile=jit))
            result[name]['op_seconds_by_type'] = {k: round(t, 2) for k, t in times.most_common(10)}
    result['codec'] = dict(encode_seconds=summary(rounds['encode']), decode_seconds=summary(rounds['decode']),
                           encode_vs_sampler=ratio('encode', 'fast'), decode_vs_sampler=ratio('decode', 'fast'))
    result['rounds'] = {k: [round(t, 2) for t in v] for k, v in rounds.items()}
    steady = result['fast']['seconds']['median']
    if FLAGS.cold:
        bare, _ = fresh(['-c', 'import tensorflow, pixel_cnn_pp'])
        wall, _ = fresh([os.path.join(ROOT, 'sample.py'), '--checkpoint=' + path, '--num_samples=%d' % B,
                         '--batch_size=%d' % B, '--out=' + os.path.join(folder, 'samples'), '--noprogress'])
        _, out = fresh([os.path.abspath(__file__), '--phases_of=' + path, '--batch_size=%d' % B], repeats=1)
        phases = json.loads(out.strip().splitlines()[-1])
        # the cold start against this run's steady batch, and against the steady batch of the
        # fresh process (the machine's load moves both)
        result['cold'] = dict(sample_py_seconds=round(wall, 1), bare_import_seconds=round(bare, 1),
                              seconds=round(wall - bare, 1), vs_steady=round((wall - bare) / steady, 2),
                              vs_steady_there=round((wall - bare) / phases['second_batch'], 2), phases=phases)
    return result


def main(argv):
    del argv
    if FLAGS.phases_of:
        print(json.dumps(phases(FLAGS.phases_of, FLAGS.batch_size)))
        return
    results = {'date': time.strftime('%Y-%m-%d'), 'cpus': os.cpu_count(), 'load_average': os.getloadavg()}
    with tempfile.TemporaryDirectory() as folder:
        for size in FLAGS.sizes:
            results[size] = bench(size, folder)
            print(json.dumps({size: results[size]}), file=sys.stderr)
    print(json.dumps(results, indent=1))


if __name__ == '__main__':
    app.run(main)
