"""What the command-line scripts share: the common flags (--progress, --verbose), the
official model flags, the flags of a script that loads a trained model (--checkpoint and the
overrides of `pixel_cnn_pp.load`), and running a script so that a user's mistake is a short
message, not a traceback or the help.

A script sets TF_CPP_MIN_LOG_LEVEL=2 and imports pixel_cnn_pp first (TensorFlow without its
start-up logs: console.py), defines its own flags, calls the define_* functions it needs, then `flags.adopt_module_key_flags(cli)` so
that its --help lists these flags too, and ends with `cli.run(main)`.

Exit statuses, the same in every script:
    0    done (--help too)
    1    the run failed: training diverged (non-finite loss or weights), or a bug (with
         its traceback)
    2    usage error: an unknown flag, a bad flag value, a missing or unreadable input
         file, a model that does not fit the task; one line says what and which flag
    3    a file could not be written or read by the system (disk full, permission denied)
    130  interrupted (Ctrl-C)"""

import contextlib
import json
import os
import re
import sys

from absl import app, flags, logging

from pixel_cnn_pp import checkpoints, config, console, data, progress

FLAGS = flags.FLAGS
USAGE, FAILED, SYSTEM, INTERRUPTED = 2, 1, 3, 130  # exit statuses (see above)

# the common flags of every script
flags.DEFINE_boolean('progress', True, 'Show a progress bar (on a terminal; written to a file '
                     'or a pipe: a plain line every 10%% or 5 minutes)')
flags.DEFINE_boolean('verbose', False, 'Print the flags at the start, and absl/TensorFlow INFO '
                     'log lines (set TF_CPP_MIN_LOG_LEVEL=0 for TensorFlow\'s start-up logs too)')


def _define_model_flags(defaults, note=''):
    flags.DEFINE_integer('nr_resnet', defaults[0], 'Number of residual blocks per stage of the '
                         'model' + note, lower_bound=1)
    flags.DEFINE_integer('nr_filters', defaults[1], 'Number of filters to use across the model. '
                         'Higher = larger model.' + note, lower_bound=1)
    flags.DEFINE_integer('nr_logistic_mix', defaults[2], 'Number of logistic components in the '
                         'mixture.' + note, lower_bound=1)
    flags.DEFINE_enum('resnet_nonlinearity', defaults[3], list(config.NONLINEARITIES),
                      'Which nonlinearity to use in the ResNet layers' + note)
    flags.DEFINE_boolean('energy_distance', defaults[4], 'Use energy distance in place of '
                         'likelihood' + note)


def define_model_flags():
    """The official model flags with the official defaults, for scripts that build a model."""
    _define_model_flags((5, 160, 10, 'concat_elu', False))


def given_model_flags():
    """The model flags given on the command line: {name: value}."""
    return {k: FLAGS[k].value for k in config.ModelConfig.ARCHITECTURE if FLAGS[k].present}


# the config fields whose flag has another name (pixel_cnn_pp.config, run.train)
FLAG_OF_FIELD = {'replicas': 'nr_gpu', 'resume': 'load_params'}


def flag_name(field):
    """The flag that sets a config field or library argument."""
    return FLAG_OF_FIELD.get(field, field)


def as_flag(field, value, name_only=False):
    """A setting as the command line writes it: --batch_size=16, --load_params for
    resume=True, --noema for ema=False; its Python name where no flag of this script sets it."""
    flag = flag_name(field)
    if flag not in FLAGS:
        return config.as_argument(field, value, name_only)
    if name_only or value is config.NO_VALUE:
        return '--' + flag
    if isinstance(value, bool):
        return '--%s%s' % ('' if value else 'no', flag)
    if isinstance(value, (tuple, list)):
        value = ','.join(map(str, value))
    return '--%s=%s' % (flag, value)


def flag_message(error):
    """A library error's message with the settings it names written as the flags that set
    them (as_flag): a config.Settings error renders its own placeholders; any other error is
    its own text. The one place that knows both names."""
    return error.render(as_flag) if isinstance(error, config.Settings) else str(error)


@contextlib.contextmanager
def flag_errors(prefix='', suffix=''):
    """A library's ConfigError (a setting that cannot be) inside becomes a usage error whose
    message names the flags (flag_message), between prefix and suffix."""
    try:
        yield
    except config.ConfigError as e:
        raise app.UsageError(prefix + flag_message(e) + suffix) from None


def define_checkpoint_flag(what):
    """--checkpoint: anything pixel_cnn_pp.load reads."""
    flags.DEFINE_string('checkpoint', None, what + 'a --save_dir of train.py (its latest '
                        'checkpoint), one checkpoint (save/ckpt-12), a .keras file, or an official '
                        'TF1 checkpoint (params_cifar.ckpt)')


def define_ema_flag():
    """--ema / --noema: which of a trained model's weights are loaded."""
    flags.DEFINE_boolean('ema', True, 'Use the Polyak-averaged (EMA) weights; --noema: the raw ones')


def define_load_flags():
    """--checkpoint, --noema, and the model flags as overrides of what the checkpoint
    says (default: the checkpoint's own, or config.json's)."""
    define_checkpoint_flag('The trained model: ')
    define_ema_flag()
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
        if len(size) not in (1, 2) or not config.fits(size * (3 - len(size))):
            raise app.UsageError('--image_size must be H,W or one number, multiples of 4, got %s'
                                 % ','.join(FLAGS.image_size))
        overrides['image_shape'] = tuple(size * (3 - len(size)))
    return overrides


def load_model(path, use_ema=True):
    """pixel_cnn_pp.load with the overrides of the load flags, then the line saying what was
    loaded (loaded_line); a bad path or config is a UsageError."""
    try:
        model = checkpoints.load(path, use_ema=use_ema, **load_overrides())
    except ValueError as e:
        raise app.UsageError(flag_message(e)) from None
    model.run_config = run_config(model, path)
    print(loaded_line(model, path, use_ema))
    return model


def run_config(model, path):
    """The config.json of the training run a model loaded from `path` comes from (a
    save_dir or one of its checkpoints), if it is that model's (its image_shape and
    num_labels): what the scripts apply again to the images they read for it (image_size,
    class_names). {} for a .keras file, an official checkpoint, a run without one."""
    if str(path).endswith('.keras'):
        return {}
    try:
        saved = config.read(model.folder) or {}
    except config.ConfigError:
        return {}
    if tuple(saved.get('image_shape') or ()) != tuple(model.image_shape) or \
            saved.get('num_labels', 0) != model.num_labels:
        return {}
    return saved


def loaded_line(model, path, use_ema=True):
    """What every script that loads a model prints first: which file (for a save_dir, which
    of its checkpoints), the training step, which weights, and the model's size:
    `loaded save/ckpt-1200 (step 1200, EMA weights): 1,234,567 parameters, 32x32x3 images`."""
    source = getattr(model, 'checkpoint_path', None) or path
    if source.endswith('.keras'):
        what = 'the weights it holds'
    else:
        step = re.search(r'-(\d+)$', source)
        what = '%s%s weights' % ('step %s, ' % step.group(1) if step else '',
                                 'EMA' if use_ema else 'raw')
    return 'loaded %s (%s): %s parameters, %s images%s' % (
        source, what, '{:,}'.format(model.count_params()), 'x'.join(map(str, model.image_shape)),
        ', %d labels' % model.num_labels if model.num_labels else '')


PAPER_COST = 5 * 160 ** 2  # nr_resnet x nr_filters^2 of the paper's model
CPU_RECIPE = '--nr_resnet=1 --nr_filters=32 --nr_logistic_mix=5 --max_epochs=1'  # the README's first command


def note_no_gpu(model_kwargs, gpus):
    """Prints (and returns) one line when train.py trains a model of about the paper's size
    (a quarter of its cost or more) with no GPU visible; the run goes on (the user may mean
    it). Returns None otherwise."""
    if gpus or model_kwargs['nr_resnet'] * model_kwargs['nr_filters'] ** 2 < PAPER_COST / 4:
        return None
    line = ('note: no GPU found; a model of this size (--nr_resnet=%d --nr_filters=%d) takes '
            'seconds a step on a CPU. The README\'s small model for CPUs: %s. Going on.'
            % (model_kwargs['nr_resnet'], model_kwargs['nr_filters'], CPU_RECIPE))
    print(line)
    return line


def npz_keys(keys):
    """What the scripts add to the line of a set read from an .npz: which keys it read."""
    return ', read from the .npz key%s %s' % ('s' if len(keys) > 1 else '', ' and '.join(keys)) if keys else ''


def read_image_set(spec, shape, data_dir=None, limit=None, flag=None, run=None):
    """data.read_set (tensorflow-datasets quiet unless --verbose) fitted to a model's shape:
    (the set's name, its first `limit` images, a folder's files of them or None); prints what was
    read and done to it. run: the
    model's run_config (its images resized and centre-cropped to its image_size, as in
    training, rather than padded or cropped). A bad SPEC is a UsageError (naming --flag when
    given)."""
    where = '--%s: ' % flag if flag else ''
    run = run or {}
    try:
        found = data.read_set(spec, data_dir, verbose=FLAGS['verbose'].value, shape=shape,
                                resize=bool(run.get('image_size')), class_names=run.get('class_names'), limit=limit)
    except ValueError as e:
        raise app.UsageError(where + flag_message(e)) from None  # e names SPEC
    name = spec[len('tfds:'):] if spec.startswith('tfds:') else os.path.basename(spec.rstrip('/'))
    read = len(found.images)  # of found.total: the first `limit`, the readable files
    print('%s: %s images%s%s' % (name, read if read == found.total else '%d of %d' % (read, found.total),
                                 ' (%s)' % ', '.join(found.done) if found.done else '', npz_keys(found.keys)))
    return name, found.images, found.files


def progress_bar(target, unit_name='step', stateful_metrics=None):
    """progress.bar, shown unless --noprogress."""
    return progress.bar(target, enabled=FLAGS.progress, unit_name=unit_name,
                        stateful_metrics=stateful_metrics)


def _error(message, status):
    print('%s: error: %s' % (os.path.basename(sys.argv[0]), message), file=sys.stderr)
    sys.exit(status)


HELP_FLAGS = ('-h', '-?', '--help', '--helpshort', '--helpfull', '--helpxml')


def parse_flags(argv):
    """absl's flag parsing, with a bad flag a usage error (status 2, like ours, not absl's
    1 and its help pointer) and --help exit status 0."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _error('%s\nRun with --help for the flags.' % e, USAGE)
    except SystemExit as e:  # absl's help flags print the help and exit 1
        if e.code == 1 and any(a.split('=')[0] in HELP_FLAGS for a in argv[1:]):
            sys.exit(0)
        raise


def run(main):
    """app.run(main) with the exit statuses above: a user's mistake (app.UsageError, a bad
    flag) is one short message, not the whole help; a diverged run (FloatingPointError) its
    message; an OSError its message; Ctrl-C one line. INFO log lines (TensorFlow's saving,
    assets, signatures) only with --verbose, which also prints the script's flags. Output to a
    console that is gone (a pipe closed, a terminal hung up) is dropped, never an error
    (console.surviving_output)."""
    def main_with_short_errors(argv):
        logging.set_verbosity(logging.INFO if FLAGS.verbose else logging.WARNING)
        if FLAGS.verbose:  # as the official train.py prints its args
            ours = FLAGS.get_key_flags_for_module(sys.modules['__main__'])
            print('input args:\n', json.dumps({f.name: f.value for f in ours}, indent=4,
                                               separators=(',', ':')))
        try:
            return main(argv)
        except app.UsageError as e:
            _error('%s\nRun with --help for the flags.' % e, USAGE)
        except FloatingPointError as e:
            _error(e, FAILED)
        except OSError as e:
            _error('%s%s' % (e.strerror or e, ': %s' % e.filename if e.filename else ''), SYSTEM)
        except KeyboardInterrupt:
            _error('interrupted', INTERRUPTED)

    with console.surviving_output():
        app.run(main_with_short_errors, flags_parser=parse_flags)
