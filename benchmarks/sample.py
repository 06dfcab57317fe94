"""Seconds per batch of samples, naive (the official per-pixel loop) against fast (cached).

    python benchmarks/sample.py                      # paper size and small, batch 16
    python benchmarks/sample.py --sizes=small --batch_size=4

Prints JSON. Fast is timed on whole batches, without and with XLA (jit_compile; its first
batch includes tracing and compiling and is reported apart). Every naive iteration is the
same work, one forward pass of the whole network plus sampling, so naive's seconds per
batch are the median time of that iteration times H * W (a full naive batch at the paper
size takes over an hour on 2 CPU cores). Then one more fast batch of each under
tf.profiler: its op time by TensorFlow op type (summed over executor threads; the XLA
pixel loop is not among them, so with XLA the wall time minus the ops' is mostly that
loop) against its wall time, the rest being dispatch between ops, the per-row steps'
Python and the loops. Last, peak memory: of the process so far, and of this size's tensors.
"""

import json
import os
import sys
import time

os.environ.setdefault('TF_CPU_ALLOCATOR_USE_BFC', 'true')  # the CPU's peak (profiling.peak_memory)

from absl import app, flags
import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pixel_cnn_pp import PixelCNNPP, nn, sampling  # noqa: E402
import profiling  # noqa: E402

SIZES = {'paper': dict(nr_resnet=5, nr_filters=160, nr_logistic_mix=10),
         'small': dict(nr_resnet=2, nr_filters=64, nr_logistic_mix=5)}
flags.DEFINE_list('sizes', ['paper', 'small'], 'Model sizes to time: %s' % ', '.join(SIZES))
flags.DEFINE_integer('batch_size', 16, 'Images per batch')
flags.DEFINE_integer('image_size', 32, 'Height and width')
flags.DEFINE_integer('naive_iterations', 5, 'Naive iterations to time (median taken)')
flags.DEFINE_integer('fast_batches', 2, 'Fast batches to time after the first')
flags.DEFINE_boolean('profile', True, 'Profile one more fast batch')
FLAGS = flags.FLAGS


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench(size):
    keras.utils.set_random_seed(0)
    B, H = FLAGS.batch_size, FLAGS.image_size
    shape = (B, H, H, 3)
    model = PixelCNNPP(dropout_p=0., **SIZES[size])
    model(np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32), init=True)
    noise = sampling.noise(shape, model.nr_logistic_mix, tf.constant(0, tf.int64))
    x = tf.zeros(shape)
    iteration = tf.function(lambda x: nn.sample_with_noise(model(x), 3, noise))
    iteration(x).numpy()  # trace
    naive_pixel = median_seconds(lambda: iteration(x).numpy(), FLAGS.naive_iterations)
    naive = naive_pixel * H * H
    result = dict(model=SIZES[size], batch_size=B, image_size=H,
                  naive_seconds_per_pixel=round(naive_pixel, 4),
                  naive_seconds_per_batch=round(naive, 1))
    for name, jit in (('fast', False), ('fast_xla', True)):
        def draw():
            sampling.sample(model, B, seed=0, image_shape=shape[1:], jit_compile=jit)
        start = time.perf_counter()
        draw()
        first = time.perf_counter() - start
        fast = median_seconds(draw, FLAGS.fast_batches)
        result[name] = dict(seconds_per_batch_first=round(first, 1), seconds_per_batch=round(fast, 2),
                            milliseconds_per_pixel=round(1e3 * fast / (H * H), 2),
                            speedup=round(naive / fast, 1))
        if FLAGS.profile:
            start = time.perf_counter()
            times = profiling.op_time_by_type(draw)
            result[name].update(profiled_wall_seconds=round(time.perf_counter() - start, 1),
                                op_seconds=round(sum(times.values()), 1),
                                op_seconds_by_type={k: round(t, 2) for k, t in times.most_common(10)})
    if FLAGS.profile:
        result['op_count_note'] = 'op seconds are summed over executor threads, which overlap'
    return result


def main(argv):
    del argv
    results = {}
    for size in FLAGS.sizes:
        tf.config.experimental.reset_memory_stats('CPU:0')
        results[size] = bench(size)
        # the process's peak so far (all sizes until this one); its tensors' for this size
        results[size]['peak_rss_gb'], results[size]['peak_tensors_gb'] = profiling.peak_memory('/cpu:0')
    print(json.dumps(results, indent=1))


if __name__ == '__main__':
    app.run(main)
