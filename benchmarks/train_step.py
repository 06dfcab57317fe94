"""Seconds per training step: the exact step train.py runs (forward, loss, backward, the
official Adam, EMA) on random 8-bit images, on one device; and the same step run by Keras'
model.fit (model.compile(), the paper's procedure), side by side.

    python benchmarks/train_step.py                                   # paper size
    python benchmarks/train_step.py --nr_resnet=2 --nr_filters=64     # small
    python benchmarks/train_step.py --precision=mixed_bfloat16        # on a GPU
    python benchmarks/train_step.py --recompute                       # half the memory
    python benchmarks/train_step.py --accum_steps=8                   # the paper's 128 on one device

Prints JSON: the median seconds per step (one update: --accum_steps micro-batches of
--batch_size) after warm-up, images/s, fit's median seconds per step (wall time between the
ends of consecutive batches; with --accum_steps=1 and without --recompute, which compile does
not take; --steps of each, in turn, twice) and its ratio to train.py's, the peak resident memory of the process, the peak of
the device's tensors (tf.config.experimental.get_memory_info; on a CPU through TensorFlow's
BFC allocator, which this script turns on), and from a tf.profiler trace of --profile_steps
further steps the share of op time spent in convolutions (and matmuls) and the op types
taking the most time.
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
import pixel_cnn_pp  # noqa: E402
from pixel_cnn_pp import cli, config, training  # noqa: E402
from pixel_cnn_pp.config import ModelConfig, TrainConfig  # noqa: E402
import profiling  # noqa: E402

cli.define_model_flags()
flags.DEFINE_float('dropout_p', 0.5, 'Dropout')
flags.DEFINE_integer('batch_size', 16, 'Images per step')
flags.DEFINE_integer('image_size', 32, 'Height and width')
flags.DEFINE_integer('warmup', 2, 'Steps not timed (the first traces the step)')
flags.DEFINE_integer('steps', 5, 'Steps timed')
flags.DEFINE_integer('profile_steps', 1, 'Steps traced with tf.profiler after the timed ones (0: none)')
flags.DEFINE_boolean('xla', False, 'Compile the forward and backward pass with XLA')
flags.DEFINE_integer('accum_steps', 1, 'Micro-batches of --batch_size per update', lower_bound=1)
flags.DEFINE_boolean('recompute', False, 'Recompute the gated ResNet blocks in the backward pass')
flags.DEFINE_boolean('fit', True, 'Also time the step under Keras\' model.fit')
flags.DEFINE_enum('precision', 'float32', list(config.PRECISIONS), 'Compute dtype of training')
FLAGS = flags.FLAGS


def profile(trainer, batch, steps):
    times = profiling.op_time_by_type(lambda: [trainer.train_step(batch) for _ in range(steps)])
    total = sum(times.values())

    def share(word):
        return round(sum(t for k, t in times.items() if word in k) / total, 3)

    return dict(conv_share=share('Conv2D'), matmul_share=share('MatMul'),
                top_ops={k: round(t / steps, 3) for k, t in times.most_common(8)})


class _BatchEnds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def fit_model(model_config):
    """A PixelCNNPP compiled for model.fit, the paper's procedure, in this run's precision."""
    keras.utils.set_random_seed(0)
    model = pixel_cnn_pp.PixelCNNPP(**model_config.kwargs(), dtype=FLAGS.precision)
    model.compile(jit_compile=FLAGS.xla)
    return model


def fit_times(model, x, warmup):
    """The wall times between the ends of model.fit's batches, the first `warmup` left out."""
    ends = _BatchEnds()
    model.fit(tf.data.Dataset.from_tensors(x).repeat(warmup + FLAGS.steps + 1), epochs=1, verbose=0,
              callbacks=[ends])
    return list(np.diff(ends.ends[warmup:]))


def main(argv):
    del argv
    keras.utils.set_random_seed(0)
    shape = (FLAGS.batch_size * FLAGS.accum_steps, FLAGS.image_size, FLAGS.image_size, 3)
    rng = np.random.default_rng(0)
    x = tf.constant((rng.integers(0, 256, shape) - 127.5) / 127.5, tf.float32)
    device = '/gpu:0' if tf.config.list_physical_devices('GPU') else '/cpu:0'
    model = ModelConfig(**{k: FLAGS[k].value for k in ModelConfig.ARCHITECTURE}, dropout_p=FLAGS.dropout_p,
                        image_shape=shape[1:])
    run = TrainConfig(xla=FLAGS.xla, precision=FLAGS.precision, accum_steps=FLAGS.accum_steps,
                      recompute=FLAGS.recompute)
    trainer = training.Trainer(pixel_cnn_pp.PixelCNNPP(**model.kwargs()), run, tf.distribute.OneDeviceStrategy(device))
    trainer.initialize(x[:FLAGS.batch_size])
    batch = (x, tf.zeros(shape[0], tf.int32), tf.ones(shape[0]))
    for _ in range(FLAGS.warmup):
        trainer.train_step(batch)
    with_fit = FLAGS.fit and FLAGS.accum_steps == 1 and not FLAGS.recompute
    fitted = fit_model(model) if with_fit else None
    times, fit_steps = [], []
    for k in range(2 if with_fit else 1):  # the two in turn, twice: a busy machine weighs on both alike
        for _ in range(FLAGS.steps):
            start = time.perf_counter()
            trainer.train_step(batch)
            times.append(time.perf_counter() - start)
        if with_fit:
            fit_steps += fit_times(fitted, x, FLAGS.warmup if k == 0 else 0)
    step = float(np.median(times))
    fit = float(np.median(fit_steps)) if with_fit else None
    result = dict(nr_resnet=FLAGS.nr_resnet, nr_filters=FLAGS.nr_filters,
                  nr_logistic_mix=FLAGS.nr_logistic_mix, batch_size=FLAGS.batch_size,
                  accum_steps=FLAGS.accum_steps, recompute=FLAGS.recompute, xla=FLAGS.xla,
                  precision=FLAGS.precision, seconds_per_step=round(step, 3),
                  images_per_second=round(shape[0] / step, 2))
    if fit is not None:
        result.update(fit_seconds_per_step=round(fit, 3), fit_over_train_py=round(fit / step, 4))
    result['peak_rss_gb'], result['peak_tensors_gb'] = profiling.peak_memory(device)
    if FLAGS.profile_steps:
        result.update(profile(trainer, batch, FLAGS.profile_steps), op_seconds_note=(
            'op time summed over executor threads, which overlap; shares are of that sum'))
    print(json.dumps(result, indent=1))


if __name__ == '__main__':
    app.run(main)
