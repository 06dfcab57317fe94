"""Draws samples from a trained PixelCNN++ (its Polyak-averaged weights): a checkpoint of
ours in --save_dir, or an official TF1 checkpoint. Writes a tiled PNG grid and an .npz of
uint8 images.

    python sample.py --save_dir=save --num_samples=16
    python sample.py --tf1_checkpoint=params_cifar.ckpt --num_samples=64 --method=fast
    python sample.py --save_dir=save_cond --class_conditional --labels=3,5
"""

import json
import os

from absl import app, flags
import keras
import numpy as np
import tensorflow as tf

from pixel_cnn_pp import PixelCNNPP, load_official_checkpoint, sampling, training

FLAGS = flags.FLAGS
flags.DEFINE_string('save_dir', None, 'Directory with checkpoints of train.py (the latest is used)')
flags.DEFINE_string('tf1_checkpoint', None, 'An official TF1 checkpoint (e.g. params_cifar.ckpt) instead')
flags.DEFINE_integer('num_samples', 16, 'How many images')
flags.DEFINE_integer('batch_size', 16, 'Images drawn at once')
flags.DEFINE_integer('seed', 1, 'Random seed: the same seed gives the same images')
flags.DEFINE_list('labels', None, 'With --class_conditional: the labels to draw, cycled '
                  '(default 0, 1, 2, ... over all labels)')
flags.DEFINE_integer('num_labels', 10, 'With --class_conditional and --tf1_checkpoint: the number of labels')
flags.DEFINE_enum('method', 'fast', ['fast', 'naive'], 'fast: cached generation; naive: the '
                  'official loop, one forward pass of the whole network per pixel')
flags.DEFINE_integer('image_size', 32, 'With --tf1_checkpoint: height and width')
flags.DEFINE_integer('channels', 3, 'With --tf1_checkpoint: 3 (RGB) or 1 (grayscale)')
flags.DEFINE_string('out', None, 'Output prefix (default: <save_dir or .>/samples)')
training.define_model_flags()


def build():
    """The model with the checkpoint's averaged weights, its image shape and label count."""
    if bool(FLAGS.save_dir) == bool(FLAGS.tf1_checkpoint):
        raise app.UsageError('pass exactly one of --save_dir and --tf1_checkpoint')
    kwargs = dict(training.model_kwargs(FLAGS), dropout_p=0.)
    if FLAGS.save_dir:
        latest = tf.train.latest_checkpoint(FLAGS.save_dir)
        if latest is None:
            raise app.UsageError('no checkpoint in --save_dir=%s' % FLAGS.save_dir)
        with open(os.path.join(FLAGS.save_dir, 'config.json')) as f:
            saved = json.load(f)
        image_shape, num_labels = tuple(saved['image_shape']), saved['num_labels']
        if FLAGS.class_conditional != bool(num_labels):
            raise app.UsageError('--class_conditional=%s but the checkpoint was trained %s labels'
                                 % (FLAGS.class_conditional, 'with' if num_labels else 'without'))
        training.check_config(FLAGS.save_dir, training.model_config(kwargs, image_shape, num_labels))
    else:
        image_shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
        num_labels = FLAGS.num_labels if FLAGS.class_conditional else 0
    model = PixelCNNPP(**kwargs)
    model(tf.zeros((1,) + image_shape), h=tf.zeros([1, num_labels]) if num_labels else None)
    if FLAGS.save_dir:
        training.load_ema(model, latest)
        print('sampling from the EMA weights of', latest)
    else:
        load_official_checkpoint(model, FLAGS.tf1_checkpoint, use_ema=True)
        print('sampling from the EMA weights of', FLAGS.tf1_checkpoint)
    return model, image_shape, num_labels


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    model, image_shape, num_labels = build()
    labels = None
    if num_labels:
        cycle = [int(l) for l in FLAGS.labels] if FLAGS.labels else list(range(num_labels))
        if any(not 0 <= l < num_labels for l in cycle):
            raise app.UsageError('--labels must be in [0, %d), got %s' % (num_labels, FLAGS.labels))
        labels = np.resize(cycle, FLAGS.num_samples)
    images = []
    for start in range(0, FLAGS.num_samples, FLAGS.batch_size):
        n = min(FLAGS.batch_size, FLAGS.num_samples - start)
        h = tf.one_hot(labels[start:start + n], num_labels) if labels is not None else None
        images.append(sampling.sample(model, n, h=h, seed=FLAGS.seed + start, method=FLAGS.method,
                                      image_shape=image_shape))
    images = np.concatenate(images)
    out = FLAGS.out or os.path.join(FLAGS.save_dir or '.', 'samples')
    sampling.write_samples(images, out)
    print('wrote %d samples to %s.png and %s.npz' % (len(images), out, out))


if __name__ == '__main__':
    app.run(main)
