"""Seconds per training step: the exact step train.py runs (forward, loss, backward, the
official Adam, EMA) on random 8-bit images, on one device.

    python benchmarks/train_step.py                                   # paper size
    python benchmarks/train_step.py --nr_resnet=2 --nr_filters=64 --nr_logistic_mix=5

Prints JSON: the median seconds per step after warm-up, images/s, and the peak resident
memory of the process.
"""

import json
import os
import resource
import sys
import time

from absl import app, flags
import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pixel_cnn_pp import training  # noqa: E402

training.define_model_flags()
flags.DEFINE_float('dropout_p', 0.5, 'Dropout')
flags.DEFINE_integer('batch_size', 16, 'Images per step')
flags.DEFINE_integer('image_size', 32, 'Height and width')
flags.DEFINE_integer('warmup', 2, 'Steps not timed (the first traces the step)')
flags.DEFINE_integer('steps', 5, 'Steps timed')
flags.DEFINE_boolean('xla', False, 'Compile the forward and backward pass with XLA')
FLAGS = flags.FLAGS


def main(argv):
    del argv
    keras.utils.set_random_seed(0)
    shape = (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3)
    rng = np.random.default_rng(0)
    x = tf.constant((rng.integers(0, 256, shape) - 127.5) / 127.5, tf.float32)
    device = '/gpu:0' if tf.config.list_physical_devices('GPU') else '/cpu:0'
    trainer = training.Trainer(tf.distribute.OneDeviceStrategy(device), training.model_kwargs(FLAGS),
                               shape[1:], jit_compile=FLAGS.xla)
    trainer.initialize(x)
    batch = (x, tf.zeros(shape[0], tf.int32), tf.ones(shape[0]))
    for _ in range(FLAGS.warmup):
        trainer.train_step(batch)
    times = []
    for _ in range(FLAGS.steps):
        start = time.perf_counter()
        trainer.train_step(batch)
        times.append(time.perf_counter() - start)
    step = float(np.median(times))
    print(json.dumps(dict(nr_resnet=FLAGS.nr_resnet, nr_filters=FLAGS.nr_filters,
                          nr_logistic_mix=FLAGS.nr_logistic_mix, batch_size=FLAGS.batch_size,
                          xla=FLAGS.xla, seconds_per_step=round(step, 3),
                          images_per_second=round(FLAGS.batch_size / step, 2),
                          peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)),
                     indent=1))


if __name__ == '__main__':
    app.run(main)
