"""Draws samples from a trained PixelCNN++ (its Polyak-averaged weights unless --noema), or
completes images: keeps their top rows and samples the rest. The model is a save_dir of
train.py, one of its checkpoints, a .keras file or an official TF1 checkpoint, loaded with
pixel_cnn_pp.load. Writes a PNG grid and an .npz of uint8 images.

    python sample.py --checkpoint=save --num_samples=16
    python sample.py --checkpoint=params_cifar.ckpt --temperature=0.8
    python sample.py --checkpoint=save_cond                # one grid row per class
    python sample.py --checkpoint=save_cond --labels=3,5
    python sample.py --checkpoint=save_folder --labels=cat,dog  # class names (config.json)
    python sample.py --checkpoint=save --complete=test.npz --given_rows=16 --num_samples=8
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # before TensorFlow: its C++ warnings hidden (0: all)
import pixel_cnn_pp  # noqa: E402,F401  (first: TensorFlow imported without its start-up notices)
import time

from absl import app, flags
import keras
import numpy as np
import tensorflow as tf

from pixel_cnn_pp import cli, files, sampling
from pixel_cnn_pp import images as image_lib

FLAGS = flags.FLAGS
cli.define_load_flags()
flags.adopt_module_key_flags(cli)
flags.DEFINE_integer('num_samples', 16, 'How many images (with --complete: how many images to '
                     'complete; for a class-conditional model without --labels: at least this '
                     'many, the same number per class)', lower_bound=1)
flags.DEFINE_integer('batch_size', 16, 'Images drawn at once', lower_bound=1)
flags.DEFINE_integer('seed', 1, 'Random seed: the same seed gives the same images')
flags.DEFINE_list('labels', None, 'For a class-conditional model: the classes to draw, cycled, each '
                  'a class name (those of its config.json: a folder\'s subfolders, a tfds set\'s label names) '
                  'or an index (default: every class, one grid row per class)')
flags.DEFINE_enum('method', 'fast', list(sampling.METHODS), 'fast: cached generation; naive: the '
                  'official loop, one forward pass of the whole network per pixel')
flags.DEFINE_boolean('jit_compile', None, 'Compile the fast sampler\'s per-pixel loop with XLA '
                     '(--nojit_compile: never; default: where its compile pays within the call, '
                     'which on a CPU it never does; the line before sampling says which ran)')
flags.DEFINE_float('temperature', 1., 'Mixture logits / T and logistic scales x T: 1 samples the '
                   'model; below 1 gives sharper, less varied images that are no longer samples '
                   'of the model', lower_bound=0.)
flags.DEFINE_string('complete', None, 'Images to complete: an .npz (x, else test_x), a folder of '
                    'image files (DIR/test of a folder with train/ and test/), or tfds:NAME[:SPLIT] (as '
                    'score.py reads them); the first --num_samples are used, fitted to the model\'s image size '
                    '(as in training when its config.json has an image_size)')
flags.DEFINE_integer('given_rows', None, 'With --complete: how many top rows to keep (default: half '
                     'the image)', lower_bound=0)
flags.DEFINE_integer('samples_per_image', 3, 'With --complete: completions of each image',
                     lower_bound=1)
flags.DEFINE_string('data_dir', None, 'Where tensorflow-datasets finds (or downloads) a --complete=tfds: '
                    'set; for tfds:cifar10 also the CIFAR-10 python batches')
flags.DEFINE_string('out', None, 'Output prefix (default: samples, or completions with '
                    '--complete, in the checkpoint\'s folder)')


def labels_to_draw(num_labels, names=None):
    """(the label of every sample, or None for an unconditional model; images per grid row).
    names: the model's class names (a --labels value that is one of them is that class, any
    other an index)."""
    if not num_labels:
        if FLAGS.labels:
            raise app.UsageError('--labels is for a class-conditional model; this one has no labels')
        return None, None
    if not FLAGS.labels:  # a class grid: one row per label
        per_class = -(-FLAGS.num_samples // num_labels)
        return np.repeat(np.arange(num_labels), per_class), per_class
    names = list(names or [])
    cycle = []
    for label in FLAGS.labels:
        try:
            cycle.append(names.index(label) if label in names else int(label))
        except ValueError:
            cycle.append(-1)
    if any(not 0 <= l < num_labels for l in cycle):
        shown = ', '.join(names[:10]) + (', ...' if len(names) > 10 else '')
        raise app.UsageError('--labels must be %sintegers in [0, %d), got %s' % (
            'class names (%s) or ' % shown if names else '', num_labels, ','.join(FLAGS.labels)))
    return np.resize(cycle, FLAGS.num_samples), None


def images_to_complete(model):
    """The first --num_samples images of --complete, fitted to the model's shape."""
    _, images, _ = cli.read_image_set(FLAGS.complete, model.image_shape, FLAGS.data_dir, FLAGS.num_samples, 'complete',
                                   run=model.run_config)
    if len(images) < FLAGS.num_samples:
        print('--complete=%s holds %d images: completing all %d (--num_samples=%d asks for more)'
              % (FLAGS.complete, len(images), len(images), FLAGS.num_samples))
    return images


def completion_grid(originals, completions, rows):
    """One grid row per image: the original, the kept rows (the rest gray), its completions."""
    kept = originals.copy()
    kept[:, rows:] = 128
    per = len(completions) // len(originals)
    cells = [np.concatenate([originals[k:k + 1], kept[k:k + 1], completions[k * per:(k + 1) * per]])
             for k in range(len(originals))]
    return image_lib.tile(np.concatenate(cells), cols=per + 2)


def main(argv):
    del argv
    if not FLAGS.checkpoint:
        raise app.UsageError('--checkpoint is required: a save_dir of train.py, a checkpoint, a '
                             '.keras file or an official TF1 checkpoint')
    for name in ('given_rows', 'samples_per_image', 'data_dir'):
        if FLAGS[name].present and not FLAGS.complete:
            raise app.UsageError('--%s is for --complete' % name)
    with cli.flag_errors():  # what needs no model, before it is loaded
        sampling.check_arguments(FLAGS.method, FLAGS.temperature, FLAGS.jit_compile)
    keras.utils.set_random_seed(FLAGS.seed)
    model = cli.load_model(FLAGS.checkpoint, use_ema=FLAGS.ema)
    labels, per_row = labels_to_draw(model.num_labels, model.run_config.get('class_names'))
    rows = 0 if not FLAGS.complete else model.image_shape[0] // 2 if FLAGS.given_rows is None else FLAGS.given_rows
    with cli.flag_errors():  # before a set is read (or downloaded) and anything written
        sampling.check(model, FLAGS.method, FLAGS.temperature, FLAGS.jit_compile, rows)
    given = None
    if FLAGS.complete:
        originals = images_to_complete(model)
        given = np.repeat(originals, FLAGS.samples_per_image, axis=0)
        if labels is not None:
            labels = np.resize(labels, len(given))
    total = len(given) if given is not None else len(labels) if labels is not None else FLAGS.num_samples
    out = FLAGS.out or os.path.join(model.folder, 'completions' if FLAGS.complete else 'samples')
    os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
    what = 'sampling %d images' % total
    if FLAGS.complete:
        what = 'completing %d images, %d completion%s each (%d samples)' % (
            len(originals), FLAGS.samples_per_image, 's' if FLAGS.samples_per_image > 1 else '', total)
    which = sampling.path(model, min(FLAGS.batch_size, total), jit_compile=FLAGS.jit_compile, method=FLAGS.method)
    print(what + ('' if FLAGS.temperature == 1 else ' at temperature %g' % FLAGS.temperature) +
          ' (%s sampler)' % which)
    H = model.image_shape[0]
    starts = range(0, total, FLAGS.batch_size)
    bar = cli.progress_bar(len(starts) * H, unit_name='row')
    images, began = [], time.time()
    for b, start in enumerate(starts):
        n = min(FLAGS.batch_size, total - start)
        h = tf.one_hot(labels[start:start + n], model.num_labels) if labels is not None else None
        images.append(sampling.sample(
            model, n, h=h, seed=FLAGS.seed + start, method=FLAGS.method,
            given=None if given is None else given[start:start + n], given_rows=rows,
            temperature=FLAGS.temperature, jit_compile=FLAGS.jit_compile,
            progress=lambda r, b=b: bar.update(b * H + r)))
    seconds = time.time() - began
    images = np.concatenate(images)
    if FLAGS.complete:
        image_lib.write_png(out + '.png', completion_grid(originals, images, rows))
        files.write_atomically(out + '.npz', lambda f: np.savez(f, samples=images, given=originals, given_rows=rows))
    else:
        image_lib.write_png(out + '.png', image_lib.tile(images, cols=per_row))
        files.write_atomically(out + '.npz', lambda f: np.savez(
            f, samples=images, **({} if labels is None else {'labels': labels})))
    print('wrote %d images to %s.png and %s.npz (%.2f images/s)' % (len(images), out, out, len(images) / seconds))


if __name__ == '__main__':
    cli.run(main)
