"""Draws samples from a trained PixelCNN++ (its Polyak-averaged weights unless --noema): a
save_dir of train.py, one of its checkpoints, a .keras file or an official TF1 checkpoint,
loaded with pixel_cnn_pp.load. Writes a tiled PNG grid and an .npz of uint8 images.

    python sample.py --checkpoint=save --num_samples=16
    python sample.py --checkpoint=params_cifar.ckpt --num_samples=64
    python sample.py --checkpoint=save_cond --labels=3,5
"""

import os

from absl import app, flags
import keras
import numpy as np
import tensorflow as tf

from pixel_cnn_pp import cli, sampling

FLAGS = flags.FLAGS
cli.define_load_flags()
flags.adopt_module_key_flags(cli)
flags.DEFINE_integer('num_samples', 16, 'How many images', lower_bound=1)
flags.DEFINE_integer('batch_size', 16, 'Images drawn at once', lower_bound=1)
flags.DEFINE_integer('seed', 1, 'Random seed: the same seed gives the same images')
flags.DEFINE_list('labels', None, 'For a class-conditional model: the labels to draw, cycled '
                  '(default 0, 1, 2, ... over all labels)')
flags.DEFINE_enum('method', 'fast', ['fast', 'naive'], 'fast: cached generation; naive: the '
                  'official loop, one forward pass of the whole network per pixel')
flags.DEFINE_string('out', None, 'Output prefix (default: samples in the checkpoint\'s folder)')


def labels_to_draw(num_labels):
    """The label of every sample (cycling --labels), or None for an unconditional model."""
    if not num_labels:
        if FLAGS.labels:
            raise app.UsageError('--labels is for a class-conditional model; this one has no labels')
        return None
    try:
        cycle = [int(l) for l in FLAGS.labels] if FLAGS.labels else list(range(num_labels))
    except ValueError:
        cycle = [-1]
    if any(not 0 <= l < num_labels for l in cycle):
        raise app.UsageError('--labels must be integers in [0, %d), got %s'
                             % (num_labels, ','.join(FLAGS.labels)))
    return np.resize(cycle, FLAGS.num_samples)


def main(argv):
    del argv
    if not FLAGS.checkpoint:
        raise app.UsageError('--checkpoint is required: a save_dir of train.py, a checkpoint, a '
                             '.keras file or an official TF1 checkpoint')
    keras.utils.set_random_seed(FLAGS.seed)
    model = cli.load_model(FLAGS.checkpoint, use_ema=FLAGS.ema)
    labels = labels_to_draw(model.num_labels)
    if model.energy_distance and FLAGS.method == 'fast':
        raise app.UsageError('an energy-distance model samples with --method=naive only')
    out = FLAGS.out or os.path.join(FLAGS.checkpoint if os.path.isdir(FLAGS.checkpoint)
                                    else os.path.dirname(FLAGS.checkpoint), 'samples')
    os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
    print('sampling from the %s weights of %s' % ('EMA' if FLAGS.ema else 'raw', FLAGS.checkpoint))
    images = []
    for start in range(0, FLAGS.num_samples, FLAGS.batch_size):
        n = min(FLAGS.batch_size, FLAGS.num_samples - start)
        h = tf.one_hot(labels[start:start + n], model.num_labels) if labels is not None else None
        images.append(sampling.sample(model, n, h=h, seed=FLAGS.seed + start, method=FLAGS.method))
    images = np.concatenate(images)
    sampling.write_samples(images, out)
    print('wrote %d samples to %s.png and %s.npz' % (len(images), out, out))


if __name__ == '__main__':
    cli.run(main)
