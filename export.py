"""Exports a trained PixelCNN++ (loaded with pixel_cnn_pp.load: a save_dir of train.py, one
checkpoint, a .keras file or an official TF1 checkpoint) as a SavedModel that any TensorFlow
program can load without this package, or as a .keras file.

    python export.py --checkpoint=save --out=exported             # SavedModel, EMA weights
    python export.py --checkpoint=params_cifar.ckpt --out=pixelcnn.keras --format=keras

The SavedModel's signatures (tf.saved_model.load(out).signatures[...]):
    log_prob(images=uint8 [N, H, W, C][, h=float32 [N, num_labels]])
        -> {'nats': log p(x), 'bits_per_dim'}, each float32 [N]
    sample(num=int32, seed=int32[, h]) -> {'images': uint8 [num, H, W, C]}
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # before TensorFlow: its C++ warnings hidden (0: all)
import pixel_cnn_pp  # noqa: E402,F401  (first: TensorFlow imported without its start-up notices)
import shutil
import tempfile

from absl import app, flags

from pixel_cnn_pp import cli, serving

FLAGS = flags.FLAGS
cli.define_load_flags()
flags.adopt_module_key_flags(cli)
flags.DEFINE_string('out', None, 'Where to write: a folder (SavedModel) or a file ending in .keras')
flags.DEFINE_enum('format', 'saved_model', ['saved_model', 'keras'], 'saved_model: the log_prob and '
                  'sample signatures, no Python code needed; keras: a .keras file for '
                  'keras.models.load_model after import pixel_cnn_pp')


def main(argv):
    del argv
    if not FLAGS.checkpoint or not FLAGS.out:
        raise app.UsageError('--checkpoint and --out are required')
    out = FLAGS.out.rstrip(os.sep)
    if FLAGS.format == 'keras' and not out.endswith('.keras'):
        raise app.UsageError('--format=keras writes a file whose name ends in .keras, got --out=%s'
                             % FLAGS.out)
    if os.path.exists(out):
        raise app.UsageError('--out=%s already exists; choose a new path' % FLAGS.out)
    model = cli.load_model(FLAGS.checkpoint, use_ema=FLAGS.ema)
    if FLAGS.format == 'saved_model':
        with cli.flag_errors(suffix='; use --format=keras'):  # before anything is written
            module = serving.Serving(model)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    # written beside the destination, then renamed: a failed export leaves nothing behind
    tmp = tempfile.mkdtemp(prefix='.export-', dir=parent)
    try:
        if FLAGS.format == 'keras':
            model.save(os.path.join(tmp, 'model.keras'))
            os.replace(os.path.join(tmp, 'model.keras'), out)
        else:
            module.save(os.path.join(tmp, 'saved_model'))
            os.replace(os.path.join(tmp, 'saved_model'), out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    H, W, C = model.image_shape
    print('wrote %s (%s, %s weights of %s; images %dx%dx%d%s)'
          % (out, FLAGS.format, 'EMA' if FLAGS.ema else 'raw', FLAGS.checkpoint, H, W, C,
             ', %d labels' % model.num_labels if model.num_labels else ''))


if __name__ == '__main__':
    cli.run(main)
