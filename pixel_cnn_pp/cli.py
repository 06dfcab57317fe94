"""What the command-line scripts share: the official model flags, the flags of a script
that loads a trained model (--checkpoint and the overrides of `pixel_cnn_pp.load`), and
running a script so that a user's mistake is a short message, not a traceback or the help.

A script defines its own flags, calls one of the define_* functions, and then
`flags.adopt_module_key_flags(cli)` so that its --help lists these flags too."""

import sys

from absl import app, flags, logging

from pixel_cnn_pp import checkpoints

FLAGS = flags.FLAGS
NONLINEARITIES = ['concat_elu', 'elu', 'relu']


def _define_model_flags(defaults, note=''):
    flags.DEFINE_integer('nr_resnet', defaults[0], 'Number of residual blocks per stage of the '
                         'model' + note, lower_bound=1)
    flags.DEFINE_integer('nr_filters', defaults[1], 'Number of filters to use across the model. '
                         'Higher = larger model.' + note, lower_bound=1)
    flags.DEFINE_integer('nr_logistic_mix', defaults[2], 'Number of logistic components in the '
                         'mixture.' + note, lower_bound=1)
    flags.DEFINE_enum('resnet_nonlinearity', defaults[3], NONLINEARITIES,
                      'Which nonlinearity to use in the ResNet layers' + note)
    flags.DEFINE_boolean('energy_distance', defaults[4], 'Use energy distance in place of '
                         'likelihood' + note)


def define_model_flags():
    """The official model flags with the official defaults, for scripts that build a model."""
    _define_model_flags((5, 160, 10, 'concat_elu', False))


def model_kwargs():
    """PixelCNNPP's arguments from the model flags (and --dropout_p where defined)."""
    kwargs = {k: FLAGS[k].value for k in checkpoints.MODEL_KEYS}
    if 'dropout_p' in FLAGS:
        kwargs['dropout_p'] = FLAGS.dropout_p
    return kwargs


def given_model_flags():
    """The model flags given on the command line: {name: value}."""
    return {k: FLAGS[k].value for k in checkpoints.MODEL_KEYS if FLAGS[k].present}


def define_checkpoint_flag(what):
    """--checkpoint: anything pixel_cnn_pp.load reads."""
    flags.DEFINE_string('checkpoint', None, what + 'a --save_dir of train.py (its latest '
                        'checkpoint), one checkpoint (save/ckpt-12), a .keras file, or an official '
                        'TF1 checkpoint (params_cifar.ckpt)')


def define_load_flags():
    """--checkpoint, --noema, and the model flags as overrides of what the checkpoint
    says (default: the checkpoint's own, or config.json's)."""
    define_checkpoint_flag('The trained model: ')
    flags.DEFINE_boolean('ema', True, 'Use the Polyak-averaged (EMA) weights; --noema: the raw ones')
    _define_model_flags((None,) * 5, ' (default: from the checkpoint)')
    flags.DEFINE_list('image_size', None, 'Training image size H,W (or one number for square '
                      'images), the default size of samples (default: from config.json, else 32)')


def load_overrides():
    """The keyword overrides of pixel_cnn_pp.load given by the load flags."""
    overrides = dict(given_model_flags())
    if 'image_size' in FLAGS and FLAGS.image_size:
        try:
            size = [int(s) for s in FLAGS.image_size]
        except ValueError:
            size = []
        if len(size) not in (1, 2) or min(size) < 4 or any(s % 4 for s in size):
            raise app.UsageError('--image_size must be H,W or one number, multiples of 4, got %s'
                                 % ','.join(FLAGS.image_size))
        overrides['image_shape'] = tuple(size * (3 - len(size)))
    return overrides


def load_model(path, use_ema=True):
    """pixel_cnn_pp.load with the overrides of the load flags; a bad path or config is a
    UsageError."""
    try:
        return checkpoints.load(path, use_ema=use_ema, **load_overrides())
    except ValueError as e:
        raise app.UsageError(str(e)) from None


def run(main):
    """app.run(main), with a UsageError printed as one short message (absl prints the whole
    help around it) and exit status 2, a diverged run (FloatingPointError) as its message
    and exit status 1, and without TensorFlow's INFO log lines."""
    def main_with_short_errors(argv):
        # TensorFlow's INFO lines (saving, assets, signatures) would bury the scripts' own
        logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except app.UsageError as e:
            print('%s: error: %s\nRun with --help for the flags.' % (sys.argv[0], e), file=sys.stderr)
            sys.exit(2)
        except FloatingPointError as e:
            print('%s: error: %s' % (sys.argv[0], e), file=sys.stderr)
            sys.exit(1)

    app.run(main_with_short_errors)
