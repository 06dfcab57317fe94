"""Trains a PixelCNN++ on CIFAR-10, downsampled ImageNet or your own images (a folder of
image files, an .npz, any tensorflow-datasets set): the official train.py on tf.distribute (one GPU, several with MirroredStrategy, several machines with
MultiWorkerMirroredStrategy when TF_CONFIG is set). --mode=eval prints a checkpoint's
test bits/dim.

    python train.py --data_dir=data --save_dir=save            # all visible GPUs
    python train.py --save_dir=save --load_params              # resume it, same settings
    python train.py --mode=eval --save_dir=save                # latest checkpoint, EMA
    python train.py --mode=eval --checkpoint=params_cifar.ckpt # the official one
    python train.py --data_set=folder --data_dir=photos --save_dir=save_mine --class_conditional

This script only turns flags into configs (pixel_cnn_pp.config) and library errors into
messages; the loop is pixel_cnn_pp.run. SIGTERM or Ctrl-C during training writes a
checkpoint of the last completed step and exits with status 143 (SIGTERM) or 130 (SIGINT).
"""

import os
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # before TensorFlow: its C++ warnings hidden (0: all)
import pixel_cnn_pp  # noqa: E402,F401  (first: TensorFlow imported without its start-up notices)
import dataclasses
import signal
import sys

from absl import app, flags
import keras
import tensorflow as tf

from pixel_cnn_pp import cli, config, run, savedir, stopping, training
from pixel_cnn_pp import data as data_lib
from pixel_cnn_pp.config import ConfigError, ModelConfig, TrainConfig

FLAGS = flags.FLAGS
# data I/O
flags.DEFINE_string('data_dir', 'data', 'Location for the dataset (for --data_set=folder: the folder of '
                    'images; npz: the .npz file; tfds: where tensorflow-datasets keeps it)')
flags.DEFINE_string('save_dir', 'save', 'Location for parameter checkpoints and samples')
flags.DEFINE_string('data_set', 'cifar', 'cifar | imagenet (downsampled 32x32) | folder (your images: '
                    '--data_dir/train and test, or one folder of which --held_out is held out; flat, or one '
                    'subfolder per class) | npz (your arrays: train_x and test_x, or x; labels y) | '
                    'tfds:NAME[:SPLIT] (a tensorflow-datasets set, e.g. tfds:mnist)')
flags.DEFINE_list('image_size', None, 'H,W (or one number): resize and centre-crop every image to it '
                  '(multiples of 4; recorded, and applied again by every script that reads images for the '
                  'model). Default: the images as they are (of one size, multiples of 4)')
flags.DEFINE_float('held_out', config.HELD_OUT, 'Of a set without a test split (a folder without test/, an '
                   '.npz of x, a tfds split): the share of each class held out as the test set (a fixed seed)')
flags.DEFINE_boolean('skip_unreadable', False, 'Leave out (and name) empty or unreadable image files of a '
                     '--data_set=folder instead of refusing the set')
flags.DEFINE_string('cache', '', 'With --data_set=folder: keep the decoded images in this file (a .npy; '
                    'built on first use, rebuilt when the files change) and read them from it')
flags.DEFINE_integer('save_interval', 20, 'Every how many epochs to write checkpoint/samples?',
                     lower_bound=1)
flags.DEFINE_boolean('load_params', False, 'Resume the run in --save_dir from its latest checkpoint, '
                     'with the settings of its config.json: a flag that would make the run differ from '
                     'an uninterrupted one is refused; --max_epochs, --save_interval, --save_steps, '
                     '--save_minutes, --num_samples, --recompute, --xla, --progress, --data_dir may change')
# model
cli.define_model_flags()
flags.DEFINE_boolean('class_conditional', False, 'Condition generative model on labels?')
# optimization
flags.DEFINE_float('learning_rate', 0.001, 'Base learning rate', lower_bound=0.)
flags.DEFINE_float('lr_decay', 0.999995, 'Learning rate decay, applied every step of the optimization',
                   lower_bound=0., upper_bound=1.)
flags.DEFINE_integer('batch_size', 16, 'Batch size during training per GPU (replica)', lower_bound=1)
flags.DEFINE_integer('accum_steps', 1, 'Micro-batches of --batch_size per replica whose gradients '
                     'each update sums: an update sees replicas x accum_steps x batch_size images '
                     '(the paper\'s 128 on one GPU: --batch_size=16 --accum_steps=8)', lower_bound=1)
flags.DEFINE_boolean('recompute', False, 'Recompute the gated ResNet blocks\' activations in the '
                     'backward pass instead of keeping them: about half the memory, same numbers')
flags.DEFINE_integer('init_batch_size', 16, 'How much data to use for data-dependent initialization.',
                     lower_bound=1)
flags.DEFINE_float('dropout_p', 0.5, 'Dropout strength (1 - keep_prob). 0 = no dropout.',
                   lower_bound=0.)
flags.DEFINE_integer('max_epochs', 5000, 'How many epochs to run in total?', lower_bound=1)
flags.DEFINE_integer('nr_gpu', None, 'Replicas: GPUs to train on (default: all visible). Without '
                     'GPUs, N > 1 splits the CPU into N logical devices.', lower_bound=1)
# evaluation
flags.DEFINE_float('polyak_decay', 0.9995, 'Exponential decay rate of the sum of previous model '
                   'iterates during Polyak averaging', lower_bound=0., upper_bound=1.)
flags.DEFINE_integer('num_samples', 1, 'How many batches of samples to output (0: none).',
                     lower_bound=0)
# reproducibility
flags.DEFINE_integer('seed', 1, 'Random seed to use')
# beyond the official flags
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'train, or print the test bits/dim of the '
                  'EMA weights (--noema: the raw ones) of --checkpoint (default: the latest in --save_dir)')
cli.define_checkpoint_flag('With --mode=eval, what to evaluate (model flags given override it): ')
cli.define_ema_flag()
flags.DEFINE_boolean('xla', False, 'Compile the forward and backward pass with XLA')
flags.DEFINE_enum('precision', 'float32', list(config.PRECISIONS),
                  'Compute dtype of training (for GPUs): mixed_bfloat16, or mixed_float16 with '
                  'dynamic loss scaling; weights, the loss and evaluation stay float32')
flags.DEFINE_float('mutation_rate', 0., 'For a background model of score.py\'s likelihood ratio '
                   '(Ren et al. 2019): replace each sub-pixel of each training batch with this '
                   'probability by a uniform value in 0..255 (0.1 to 0.3 in the paper)',
                   lower_bound=0., upper_bound=1.)
flags.DEFINE_float('l2_weight', 0., 'Add l2_weight x the sum of squared weights to the training '
                   'objective (not to the reported bits/dim); Ren et al. use it for background models',
                   lower_bound=0.)
flags.DEFINE_integer('max_steps_per_epoch', None, 'Cap on training steps per epoch, for quick runs',
                     lower_bound=1)
flags.DEFINE_integer('save_steps', 0, 'Also checkpoint every N steps within an epoch (0: only at '
                     'the end of every --save_interval epochs, as the official code)', lower_bound=0)
flags.DEFINE_float('save_minutes', 30., 'Also checkpoint at the first step boundary once this many '
                   'minutes have passed since the last checkpoint (0: never)', lower_bound=0.)
flags.adopt_module_key_flags(cli)


TRAIN_FLAGS = tuple(f for f in config.field_names(TrainConfig) if f not in ('replicas', 'class_names'))
DATA_FLAGS = ('image_size', 'held_out', 'skip_unreadable')  # a model's own (config.json) unless given


def check_flags():
    """What the flags' bounds cannot say (absl checks those as it parses), and the data
    settings' rules (config.py)."""
    with cli.flag_errors():
        config.check_data_set(FLAGS.data_set)
        config.check_image_size(FLAGS.image_size)
    for name in ('dropout_p', 'lr_decay', 'polyak_decay'):
        if FLAGS[name].value == (1. if name == 'dropout_p' else 0.):
            raise app.UsageError('--%s must be in %s, got %g' % (
                name, '[0, 1)' if name == 'dropout_p' else '(0, 1]', FLAGS[name].value))
    if FLAGS.checkpoint and FLAGS.mode != 'eval':
        raise app.UsageError('--checkpoint is for --mode=eval (to resume training, --load_params '
                             'with its --save_dir)')
    if FLAGS['ema'].present and FLAGS.mode != 'eval':
        raise app.UsageError('--%sema is for --mode=eval (training keeps both weight sets)' % ('' if FLAGS.ema else 'no'))


def make_strategy():
    """MultiWorkerMirroredStrategy under TF_CONFIG, else MirroredStrategy over --nr_gpu GPUs
    (or CPU devices), OneDeviceStrategy for one."""
    if os.environ.get('TF_CONFIG'):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices('GPU')
    if gpus:
        n = FLAGS.nr_gpu or len(gpus)
        if n > len(gpus):
            raise app.UsageError('--nr_gpu=%d but only %d GPU(s) are visible' % (n, len(gpus)))
        devices = ['/gpu:%d' % i for i in range(n)]
    else:
        n = FLAGS.nr_gpu or 1
        cpu = tf.config.list_physical_devices('CPU')[0]
        if n > len(tf.config.get_logical_device_configuration(cpu) or [None]):
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
        devices = ['/cpu:%d' % i for i in range(n)]
    if n == 1:  # the same procedure, with less tracing and dispatch than a 1-device mirror
        return tf.distribute.OneDeviceStrategy(devices[0])
    return tf.distribute.MirroredStrategy(devices)


def load_data(c, class_conditional, model_config=None):
    """The data of TrainConfig c (a ConfigError, DataError or OSError: a usage error naming
    the flag or file); model_config: a trained model's (its classes and channels)."""
    try:
        return data_lib.load(c.data_set, c.data_dir, class_conditional, verbose=FLAGS.verbose,
                             image_size=c.image_size, held_out=c.held_out, skip_unreadable=c.skip_unreadable,
                             cache=c.cache, class_names=c.class_names if model_config else None,
                             channels=model_config and model_config.image_shape[2], progress_bar=FLAGS.progress)
    except (ValueError, OSError) as e:
        raise app.UsageError(cli.flag_message(e))


def evaluate(strategy):
    """--mode=eval: the test bits/dim of a trained model's EMA weights (--noema: its raw
    ones) on --data_set, read with the data settings of its config.json (unless given)."""
    path = FLAGS.checkpoint or FLAGS.save_dir
    with strategy.scope():
        model = cli.load_model(path, use_ema=FLAGS.ema)
    run = model.run_config
    settings = {k: FLAGS[k].value if FLAGS[k].present or k not in run else run[k] for k in DATA_FLAGS}
    with cli.flag_errors():
        c = TrainConfig(data_set=FLAGS.data_set, data_dir=FLAGS.data_dir, cache=FLAGS.cache,
                        class_names=run.get('class_names') if model.num_labels else None, **settings)
    data = load_data(c, bool(model.num_labels), ModelConfig.of_model(model))
    if model.num_labels and model.num_labels != data.num_labels:
        raise app.UsageError('the model is conditioned on %d labels but --data_set=%s has %d'
                             % (model.num_labels, FLAGS.data_set, data.num_labels))
    batches = data_lib.test_batches(strategy, data, FLAGS.batch_size)
    bpd = training.Evaluator(strategy, model).evaluate(batches, data.test_x.shape[1:])
    print('test bits_per_dim = %.4f (%s weights)' % (bpd, 'EMA' if FLAGS.ema else 'raw'))
    return bpd


def run_configs(strategy):
    """(the model flags {field: value}, TrainConfig, class_conditional, the resumed run's
    ModelConfig or None): the flags, or with --load_params the run's config.json and the
    flags given that may change."""
    values = dict({k: FLAGS[k].value for k in TRAIN_FLAGS}, replicas=strategy.num_replicas_in_sync)
    values['image_size'] = config.check_image_size(values['image_size'])  # H,W as config.json has it
    model = {k: FLAGS[k].value for k in ModelConfig.ARCHITECTURE + ('dropout_p',)}
    if not FLAGS.load_params:
        return model, TrainConfig(**values), FLAGS.class_conditional, None
    given = {k: v for k, v in values.items() if k == 'replicas' or FLAGS[k].present}
    given.update({k: v for k, v in model.items() if FLAGS[k].present})
    model_config, train_config, changed, unrecorded = config.resume_from(FLAGS.save_dir, given)
    if FLAGS['class_conditional'].present and FLAGS.class_conditional != bool(model_config.num_labels):
        raise app.UsageError('--class_conditional=%s, but the run in %s being resumed is %s' % (
            FLAGS.class_conditional, FLAGS.save_dir, 'conditioned on %d labels' % model_config.num_labels
            if model_config.num_labels else 'unconditional'))
    for field, old, new in changed:
        print('resuming with --%s=%s (the run had %s)' % (field, new, old))
    if unrecorded:
        print('note: %s predates recording %s; taken from the flags' % (
            os.path.join(FLAGS.save_dir, config.CONFIG_FILE), ', '.join('--' + cli.flag_name(f) for f in unrecorded)))
    return model, train_config, bool(model_config.num_labels), model_config


def main(argv):
    del argv
    check_flags()  # --verbose prints the flags (cli.run)
    keras.utils.set_random_seed(FLAGS.seed)  # Python, NumPy, TensorFlow and Keras initializers
    strategy = make_strategy()
    if FLAGS.mode == 'eval':
        evaluate(strategy)
        return
    try:
        model, train_config, conditional, model_config = run_configs(strategy)
        data = load_data(train_config, conditional, model_config)
        if model_config is None:
            model_config = ModelConfig(**model, image_shape=data.train_x.shape[1:],
                                       num_labels=data.num_labels if conditional else 0)
        if train_config.class_names is None and data.class_names:  # recorded in config.json
            train_config = dataclasses.replace(train_config, class_names=data.class_names)
        cli.note_no_gpu(model_config.to_dict(), tf.config.list_physical_devices('GPU'))
        run.train(model_config, train_config, FLAGS.save_dir, data, strategy, resume=FLAGS.load_params)
    except ConfigError as e:
        raise app.UsageError(cli.flag_message(e)) from None
    except ValueError as e:  # no readable checkpoint to resume
        if not FLAGS.load_params:
            raise
        raise app.UsageError('--load_params: %s' % cli.flag_message(e)) from None
    except training.Diverged as e:
        raise FloatingPointError(cli.flag_message(e)) from None
    except savedir.WriteError as e:
        raise OSError('cannot write %s (%s); the run stopped%s' % (
            e.filename, e.strerror, ', its latest checkpoint is %s' % e.latest if e.latest else
            ' before its first checkpoint')) from None
    except stopping.Preempted as e:
        print('%s: %s; resume with: python train.py --save_dir=%s --load_params'
              % (os.path.basename(sys.argv[0]), e, FLAGS.save_dir), file=sys.stderr, flush=True)
        sys.exit(128 + (e.signum or signal.SIGTERM))


if __name__ == '__main__':
    cli.run(main)
