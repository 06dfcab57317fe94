"""Seconds per training step: the exact step train.py runs (forward, loss, backward, the
official Adam, EMA) on random 8-bit images, on one device.

    python benchmarks/train_step.py                                   # paper size
    python benchmarks/train_step.py --nr_resnet=2 --nr_filters=64     # small
    python benchmarks/train_step.py --precision=mixed_bfloat16        # on a GPU
    python benchmarks/train_step.py --recompute                       # half the memory
    python benchmarks/train_step.py --accum_steps=8                   # the paper's 128 on one device

Prints JSON: the median seconds per step (one update: --accum_steps micro-batches of
--batch_size) after warm-up, images/s, the peak resident memory of the process, the peak of
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
from pixel_cnn_pp import cli, training  # noqa: E402
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
flags.DEFINE_enum('precision', 'float32', list(training.PRECISIONS), 'Compute dtype of training')
FLAGS = flags.FLAGS


def profile(trainer, batch, steps):
    times = profiling.op_time_by_type(lambda: [trainer.train_step(batch) for _ in range(steps)])
    total = sum(times.values())

    def share(word):
        return round(sum(t for k, t in times.items() if word in k) / total, 3)

    return dict(conv_share=share('Conv2D'), matmul_share=share('MatMul'),
                top_ops={k: round(t / steps, 3) for k, t in times.most_common(8)})


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
    trainer = training.Trainer(model, run, tf.distribute.OneDeviceStrategy(device))
    trainer.initialize(x[:FLAGS.batch_size])
    batch = (x, tf.zeros(shape[0], tf.int32), tf.ones(shape[0]))
    for _ in range(FLAGS.warmup):
        trainer.train_step(batch)
    times = []
    for _ in range(FLAGS.steps):
        start = time.perf_counter()
        trainer.train_step(batch)
        times.append(time.perf_counter() - start)
    step = float(np.median(times))
    result = dict(nr_resnet=FLAGS.nr_resnet, nr_filters=FLAGS.nr_filters,
                  nr_logistic_mix=FLAGS.nr_logistic_mix, batch_size=FLAGS.batch_size,
                  accum_steps=FLAGS.accum_steps, recompute=FLAGS.recompute, xla=FLAGS.xla,
                  precision=FLAGS.precision, seconds_per_step=round(step, 3),
                  images_per_second=round(shape[0] / step, 2))
    result['peak_rss_gb'], result['peak_tensors_gb'] = profiling.peak_memory(device)
    if FLAGS.profile_steps:
        result.update(profile(trainer, batch, FLAGS.profile_steps), op_seconds_note=(
            'op time summed over executor threads, which overlap; shares are of that sum'))
    print(json.dumps(result, indent=1))


if __name__ == '__main__':
    app.run(main)
