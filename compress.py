"""Lossless image compression with a trained PixelCNN++: each sub-pixel entropy coded with
the model's distribution (pixel_cnn_pp.compress), so that a file takes the model's
bits/dim; decoding runs the fast sampler's cached pass and gives the images back bit for
bit, with the same model file on the same kind of machine.

    python compress.py --checkpoint=save --in=test.npz --out=test.pcpp
    python compress.py --checkpoint=save --in=photos/ --out=photos.pcpp --batch_size=32
    python compress.py --decompress --checkpoint=save --in=test.pcpp --out=back.npz
    python compress.py --decompress --checkpoint=save --in=test.pcpp --out=back/   # PNGs

--in as score.py reads sets (an .npz with x or test_x, a folder of image files, or
tfds:NAME[:SPLIT]); images are coded as they are (H and W multiples of 4, the model's
channels), never fitted. A class-conditional model codes each image given its label
(the set's y, or its class folder's by the model's class names), which the file stores.
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # before TensorFlow: its C++ warnings hidden (0: all)
import pixel_cnn_pp  # noqa: E402,F401  (first: TensorFlow imported without its start-up notices)
import shutil
import tempfile
import time

from absl import app, flags
import numpy as np
import tensorflow as tf

from pixel_cnn_pp import cli, codec, config, data, files, images, scoring

FLAGS = flags.FLAGS
cli.define_load_flags()
flags.adopt_module_key_flags(cli)
flags.DEFINE_boolean('decompress', False, 'Decode --in (a file this script wrote) instead')
flags.DEFINE_string('in', None, 'Compressing: the images, an .npz (x or test_x; labels y or '
                    'test_y), a folder of image files (labels: its class subfolders), or tfds:NAME[:SPLIT]. '
                    'With --decompress: the compressed file')
flags.DEFINE_string('out', None, 'Compressing: the file to write. With --decompress: an .npz (x, '
                    'and y for a conditional model) or a folder for PNG files (00000.png, ...; '
                    'labels.txt for a conditional model), new or empty')
flags.DEFINE_integer('batch_size', 16, 'Images coded at once (the file records it, decoding uses '
                     'the same)', lower_bound=1, upper_bound=65535)
flags.DEFINE_boolean('verify', True, 'Decode the file before writing it, as long as the '
                     'encoding again (--noverify: skip)')
flags.DEFINE_boolean('check_environment', True, 'Refuse a file written with another TensorFlow, '
                     'NumPy, device or CPU kind, whose floats may differ (--nocheck_environment: '
                     'try anyway; a wrong result is still refused by the pixels\' checksum)')
flags.DEFINE_string('data_dir', None, 'Where tensorflow-datasets finds (or downloads) a tfds: set; '
                    'for tfds:cifar10 also the CIFAR-10 python batches')


def progress_bar():
    """codec's progress callback as a bar over image rows, made at its first call (the
    codec gives the total)."""
    bar = []

    def update(rows, total):
        if not bar:
            bar.append(cli.progress_bar(total, unit_name='row'))
        bar[0].update(rows)
    return update


def read_set(spec, model):
    """The images and labels of --in, as they are (refused unless the model codes them), and
    the .npz keys they come from."""
    try:
        found = data.read_set(spec, FLAGS.data_dir, verbose=FLAGS.verbose,
                                class_names=model.run_config.get('class_names'))
    except ValueError as e:
        raise app.UsageError('--in: %s' % cli.flag_message(e)) from None
    x, y, keys = found.images, found.labels, found.keys
    C = model.channels
    if not config.fits(x.shape[1:], (C,)):
        raise app.UsageError('--in=%s: images %s; this model codes %d-channel images whose height '
                             'and width are multiples of 4 (a codec does not crop, pad or convert)'
                             % (spec, 'x'.join(map(str, x.shape[1:])), C))
    if model.num_labels and y is None:
        raise app.UsageError('--in=%s has no labels: a class-conditional model codes each image '
                             'given its label (an .npz with y, a folder of class subfolders, or a tfds set '
                             'with labels)' % spec)
    if model.num_labels and (y.min() < 0 or y.max() >= model.num_labels):
        raise app.UsageError('--in=%s: labels %d..%d, the model has %d' % (spec, y.min(), y.max(), model.num_labels))
    if not model.num_labels:
        return x, None, keys[:1]
    return x, y.astype(np.int64), keys


def bits_per_dim(num_bytes, x):
    return 8. * num_bytes / x.size


def compress(model):
    x, labels, keys = read_set(FLAGS['in'].value, model)
    out = FLAGS.out
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise app.UsageError('--out=%s: its folder does not exist' % out)
    if os.path.isdir(out):
        raise app.UsageError('--out=%s is a folder; give the file to write' % out)
    if os.path.exists(out):
        raise app.UsageError('--out=%s already exists; choose a new path' % out)
    print('compressing %d images of %s%s%s' % (len(x), 'x'.join(map(str, x.shape[1:])),
                                              ' with their labels' if labels is not None else '', cli.npz_keys(keys)))
    began = time.time()
    data = codec.compress(model, x, labels=labels, batch_size=FLAGS.batch_size, verify=False,
                          progress=progress_bar())
    encoding = time.time() - began
    decoding = None
    if FLAGS.verify:  # compress(verify=True), timed apart
        began = time.time()
        back = codec.decompress(model, data, progress=progress_bar())
        decoding = time.time() - began
        if not np.array_equal(back[0] if labels is not None else back, x):  # the checksum's job
            raise codec.CodecError('the file did not decode to the images')
    files.write_bytes(out, data)
    h = None if labels is None else tf.one_hot(labels, model.num_labels)
    ideal = -float(np.sum(scoring.log_prob(model, x, h=h), dtype=np.float64)) / np.log(2.) / 8.
    if labels is not None:  # the labels' own bits (uniform), which the file holds too
        ideal += len(labels) * np.log2(model.num_labels) / 8.
    png = float(np.sum(scoring.png_bits(x))) / 8.
    print('wrote %s: %d bytes, %.4f bits/dim' % (out, len(data), bits_per_dim(len(data), x)))
    print('  the model\'s ideal -log2 p(x): %.4f bits/dim (file %+.3f%%)'
          % (bits_per_dim(ideal, x), 100. * (len(data) - ideal) / ideal))
    print('  PNG (compression 9), each image a file: %.4f bits/dim' % bits_per_dim(png, x))
    print('  %.2f images/s encoding, %s' % (len(x) / encoding, 'not verified (--noverify)' if decoding is None
                                             else '%.2f images/s decoding (verified)' % (len(x) / decoding)))


def decompress(model):
    path, out = FLAGS['in'].value, FLAGS.out
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise app.UsageError('--in=%s: %s' % (path, e.strerror)) from None
    to_npz = out.endswith('.npz')
    if not os.path.isdir(os.path.dirname(os.path.abspath(out.rstrip('/')))):
        raise app.UsageError('--out=%s: its folder does not exist' % out)
    if to_npz and os.path.exists(out):
        raise app.UsageError('--out=%s already exists; choose a new path' % out)
    if not to_npz and os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise app.UsageError('--out=%s: give an .npz, or a folder that is new or empty' % out)
    began = time.time()
    try:
        x = codec.decompress(model, data, check_environment=FLAGS.check_environment,
                             progress=progress_bar())
    except codec.CodecError as e:
        raise app.UsageError('--in=%s: %s' % (path, e)) from None
    seconds = time.time() - began
    x, labels = x if model.num_labels else (x, None)
    if to_npz:
        files.write_atomically(out, lambda f: np.savez(f, x=x, **({} if labels is None else {'y': labels})))
    else:
        out = out.rstrip('/')
        tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out)), prefix='.' + os.path.basename(out) + '.')
        try:
            for k, image in enumerate(x):
                images.write_png(os.path.join(tmp, '%05d.png' % k), image)
            if labels is not None:
                with open(os.path.join(tmp, 'labels.txt'), 'w') as f:
                    f.write(''.join('%d\n' % y for y in labels))
            if os.path.isdir(out):
                os.rmdir(out)  # empty, checked above
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    print('decoded %d images of %s from %s (%.4f bits/dim) to %s: %.2f images/s'
          % (len(x), 'x'.join(map(str, x.shape[1:])), path, bits_per_dim(len(data), x), out, len(x) / seconds))


def main(argv):
    del argv
    if not FLAGS.checkpoint or not FLAGS['in'].value or not FLAGS.out:
        raise app.UsageError('--checkpoint, --in and --out are required')
    for name in ('verify', 'batch_size', 'data_dir'):
        if FLAGS[name].present and FLAGS.decompress:
            raise app.UsageError('--%s is for compressing (the file records the batch size)' % name)
    if FLAGS['check_environment'].present and not FLAGS.decompress:
        raise app.UsageError('--check_environment is for --decompress')
    model = cli.load_model(FLAGS.checkpoint, use_ema=FLAGS.ema)
    with cli.flag_errors():
        model.require('code with')
    (decompress if FLAGS.decompress else compress)(model)


if __name__ == '__main__':
    cli.run(main)
