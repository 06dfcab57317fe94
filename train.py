"""Trains a PixelCNN++ on CIFAR-10, downsampled ImageNet or your own images: the official
train.py on tf.distribute (one GPU, several with MirroredStrategy, several machines with
MultiWorkerMirroredStrategy when TF_CONFIG is set). --mode=eval prints a checkpoint's
test bits/dim.

    python train.py --data_dir=data --save_dir=save            # all visible GPUs
    python train.py --mode=eval --save_dir=save                # latest checkpoint, EMA
    python train.py --mode=eval --checkpoint=params_cifar.ckpt # the official one
"""

import quiet_tf  # noqa: F401  (first: TensorFlow without its start-up logs)

import os
import sys
import time

from absl import app, flags
import keras
import numpy as np
import tensorflow as tf

from pixel_cnn_pp import checkpoints, cli, progress, sampling, savedir, training
from pixel_cnn_pp import data as data_lib
from pixel_cnn_pp.training import Trainer

FLAGS = flags.FLAGS
# data I/O
flags.DEFINE_string('data_dir', 'data', 'Location for the dataset (for --data_set=npz: the .npz file)')
flags.DEFINE_string('save_dir', 'save', 'Location for parameter checkpoints and samples')
flags.DEFINE_enum('data_set', 'cifar', ['cifar', 'imagenet', 'npz'],
                  'cifar | imagenet (downsampled 32x32) | npz (your own train_x/test_x arrays)')
flags.DEFINE_integer('save_interval', 20, 'Every how many epochs to write checkpoint/samples?',
                     lower_bound=1)
flags.DEFINE_boolean('load_params', False, 'Restore training from the latest checkpoint in '
                     '--save_dir? (model flags not given are those of its config.json)')
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
                  'EMA weights of --checkpoint (default: the latest in --save_dir)')
cli.define_checkpoint_flag('With --mode=eval, what to evaluate (model flags given override it): ')
flags.DEFINE_boolean('xla', False, 'Compile the forward and backward pass with XLA')
flags.DEFINE_enum('precision', 'float32', list(training.PRECISIONS),
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
flags.adopt_module_key_flags(cli)


def check_flags():
    """What the flags' bounds cannot say (absl checks those as it parses)."""
    for name in ('dropout_p', 'lr_decay', 'polyak_decay'):
        if FLAGS[name].value == (1. if name == 'dropout_p' else 0.):
            raise app.UsageError('--%s must be in %s, got %g' % (
                name, '[0, 1)' if name == 'dropout_p' else '(0, 1]', FLAGS[name].value))
    if FLAGS.checkpoint and FLAGS.mode != 'eval':
        raise app.UsageError('--checkpoint is for --mode=eval (to resume training, --load_params '
                             'with its --save_dir)')


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


def is_chief(strategy):
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == 'chief':
        return True
    return resolver.task_type == 'worker' and resolver.task_id == 0 and \
        'chief' not in resolver.cluster_spec().as_dict()


def evaluate(strategy):
    """--mode=eval: the test bits/dim of a trained model's EMA weights on --data_set."""
    path = FLAGS.checkpoint or FLAGS.save_dir
    with strategy.scope():
        model = cli.load_model(path)
    data = load_data(bool(model.num_labels))
    if model.num_labels and model.num_labels != data.num_labels:
        raise app.UsageError('the model is conditioned on %d labels but --data_set=%s has %d'
                             % (model.num_labels, FLAGS.data_set, data.num_labels))
    print('evaluating the EMA weights of', path)
    batches = data_lib.test_batches(strategy, data, FLAGS.batch_size)
    bpd = training.Evaluator(strategy, model).evaluate(batches, data.test_x.shape[1:])
    print('test bits_per_dim = %.4f' % bpd)
    return bpd


def load_data(class_conditional):
    try:
        return data_lib.load(FLAGS.data_set, FLAGS.data_dir, class_conditional)
    except (ValueError, OSError) as e:
        raise app.UsageError(str(e))


# recorded in config.json beside the model's; a resumed run takes them from there
RUN_FLAGS = ('mutation_rate', 'l2_weight', 'accum_steps', 'recompute')
FREE_ON_RESUME = ('recompute',)  # changes no number, so a resumed run may change it


def run_config():
    """(PixelCNNPP's arguments, class_conditional, {RUN_FLAGS}) of a training
    run: the flags, and when resuming the run's config.json for every one not given."""
    kwargs, conditional = cli.model_kwargs(), FLAGS.class_conditional
    extra = {k: FLAGS[k].value for k in RUN_FLAGS}
    if FLAGS.load_params:
        try:
            saved = checkpoints.read_config(FLAGS.save_dir) or {}
        except ValueError as e:
            raise app.UsageError(str(e))
        for d, keys in ((kwargs, checkpoints.MODEL_KEYS), (extra, RUN_FLAGS)):
            d.update({k: saved[k] for k in keys if k in saved and not FLAGS[k].present})
        if 'num_labels' in saved and not FLAGS['class_conditional'].present:
            conditional = bool(saved['num_labels'])
    return kwargs, conditional, extra


class Run:
    """The training loop of the official train.py, in a save_dir that a kill at any moment
    leaves consistent and resumable: checkpoints complete before they count, the history
    written before the checkpoint that counts it, resume exact (data order, dropout and
    mutation are stateless functions of the seed and the step)."""

    def __init__(self, trainer, data, strategy):
        self.trainer, self.data, self.strategy = trainer, data, strategy
        self.chief = is_chief(strategy)
        self.global_batch = FLAGS.batch_size * strategy.num_replicas_in_sync
        self.update_images = self.global_batch * trainer.accum_steps  # the images of one step
        # every worker of a multi-worker run must save; the others keep their (identical)
        # latest checkpoint aside
        task_id = getattr(getattr(strategy, 'cluster_resolver', None), 'task_id', 0)
        self.ckpt_dir = FLAGS.save_dir if self.chief else os.path.join(FLAGS.save_dir, 'worker%d' % task_id)
        self.manager = tf.train.CheckpointManager(trainer.checkpoint, self.ckpt_dir,
                                                  max_to_keep=3 if self.chief else 1)
        self.history_path = os.path.join(FLAGS.save_dir, 'test_bpd_%s.npz' % FLAGS.data_set)
        self.test_bpd = []
        self.writer = None
        self.saved = None  # the last checkpoint this run wrote

    def start(self):
        trainer = self.trainer
        if FLAGS.load_params:
            try:
                checkpoints.check_config(FLAGS.save_dir, {k: v for k, v in trainer.config().items()
                                                          if k not in FREE_ON_RESUME})
                path, _ = checkpoints.newest_readable(
                    self.ckpt_dir, lambda p: trainer.checkpoint.restore(p).assert_consumed())
            except ValueError as e:
                raise app.UsageError('--load_params: %s' % e)
            print('restoring parameters from', path)
            self.test_bpd = savedir.read_history(self.history_path, int(trainer.epoch.numpy()))
        else:
            found = checkpoints.run_checkpoints(self.ckpt_dir)
            if found:
                raise app.UsageError('--save_dir=%s already holds checkpoints (%s): pass --load_params '
                                     'to resume, or use another --save_dir'
                                     % (FLAGS.save_dir, os.path.basename(found[0])))
            print('initializing the model...')
            first = data_lib.epoch_order(len(self.data.train_x), FLAGS.seed, 0)[:FLAGS.init_batch_size]
            y = self.data.train_y[first] if trainer.num_labels else None
            trainer.initialize(data_lib.scale(self.data.train_x[first]), y)
            if self.chief:
                checkpoints.write_config(FLAGS.save_dir, trainer.config())
        self.writer = tf.summary.create_file_writer(os.path.join(FLAGS.save_dir, 'tensorboard')) \
            if self.chief else tf.summary.create_noop_writer()
        print('starting training')
        sys.stdout.flush()

    def save(self):
        """The history first, then the checkpoint: a kill in between leaves a history one
        epoch ahead, which resume truncates to the checkpoint's epochs. A checkpoint is
        complete before CheckpointManager names it the latest, and never holds a non-finite
        value."""
        step = int(self.trainer.optimizer.step.numpy())
        if not self.trainer.all_finite():
            raise FloatingPointError('the weights at step %d are not all finite; no checkpoint of them '
                                     'is written' % step)
        if self.chief:
            savedir.write_history(self.history_path, self.test_bpd)
        self.saved = self.manager.save(checkpoint_number=step)
        return self.saved

    def write_samples(self, epoch):
        trainer = self.trainer
        images = []
        for i in range(FLAGS.num_samples):
            y = np.arange(self.global_batch) % trainer.num_labels if trainer.num_labels else None
            h = trainer.one_hot(y) if y is not None else None
            images.append(sampling.sample(trainer.ema_model, self.global_batch, h=h,
                                          seed=FLAGS.seed * 100003 + epoch * 101 + i,
                                          image_shape=self.data.train_x.shape[1:],
                                          method='naive' if trainer.model.energy_distance else 'fast'))
        images = np.concatenate(images)
        prefix = os.path.join(FLAGS.save_dir, '%s_sample%d' % (FLAGS.data_set, epoch))
        if self.chief:
            sampling.write_samples(images, prefix)
        with self.writer.as_default():
            tf.summary.image('samples', images[:16], step=int(trainer.optimizer.step.numpy()), max_outputs=16)
        print('wrote %s.png and .npz' % prefix)

    def train_epoch(self, epoch, steps):
        """The epoch's training steps (from where a resumed run stopped): (its mean train
        bits/dim, its images/s). images/s counts the wall time of the steps and of waiting
        for their batches, not evaluation, sampling or checkpoints: the progress bar shows
        the epoch's value so far, TensorBoard the whole epoch's."""
        trainer = self.trainer
        skip = int(trainer.epoch_step.numpy())
        batches = data_lib.train_batches(self.strategy, self.data, FLAGS.batch_size * trainer.accum_steps,
                                         FLAGS.seed,
                                         epoch, skip=skip, max_steps=steps)
        bar = progress.bar(steps, enabled=FLAGS.progress, stateful_metrics=['bits_per_dim', 'images/s'])
        train_losses, seconds = [], 0.
        t0 = time.time()
        for k, batch in enumerate(batches, start=skip + 1):
            try:
                nats = trainer.train_step(batch)
            except FloatingPointError as e:
                raise FloatingPointError('%s The latest checkpoint, %s, is from before it.'
                                         % (e, self.manager.latest_checkpoint)) from None
            seconds += time.time() - t0
            train_losses.append(trainer.bits_per_dim(nats, self.update_images))
            bar.update(k, [('bits_per_dim', train_losses[-1]),
                           ('images/s', len(train_losses) * self.update_images / seconds)])
            step = int(trainer.optimizer.step.numpy())
            if FLAGS.save_steps and step % FLAGS.save_steps == 0 and k < steps:
                self.save()
            t0 = time.time()
        return np.mean(train_losses), len(train_losses) * self.update_images / max(seconds, 1e-9)

    def train(self):
        trainer = self.trainer
        test_batches = data_lib.test_batches(self.strategy, self.data, FLAGS.batch_size)
        steps = data_lib.steps_per_epoch(len(self.data.train_x), self.update_images)
        if FLAGS.max_steps_per_epoch:
            steps = min(steps, FLAGS.max_steps_per_epoch)
        saved_epoch = None
        for epoch in range(int(trainer.epoch.numpy()), FLAGS.max_epochs):
            begin = time.time()
            train_bpd, images_per_second = self.train_epoch(epoch, steps)
            test_loss = trainer.evaluate(test_batches)
            self.test_bpd.append(test_loss)
            print('Iteration %d, time = %ds, train bits_per_dim = %.4f, test bits_per_dim = %.4f'
                  % (epoch, time.time() - begin, train_bpd, test_loss))
            sys.stdout.flush()
            trainer.epoch.assign(epoch + 1)
            trainer.epoch_step.assign(0)
            step = int(trainer.optimizer.step.numpy())
            with self.writer.as_default():
                tf.summary.scalar('train/bits_per_dim', train_bpd, step=step)
                tf.summary.scalar('test/bits_per_dim', test_loss, step=step)
                tf.summary.scalar('lr', float(trainer.optimizer.lr.numpy()), step=step)
                tf.summary.scalar('images_per_second', images_per_second, step=step)
            if epoch % FLAGS.save_interval == 0:
                if FLAGS.num_samples:
                    self.write_samples(epoch)
                self.save()
                saved_epoch = epoch
        if saved_epoch != FLAGS.max_epochs - 1 and int(trainer.epoch.numpy()) == FLAGS.max_epochs:
            self.save()


def check_data(data, strategy, accum_steps):
    """Flags that need the data to check, before anything is written."""
    update = FLAGS.batch_size * strategy.num_replicas_in_sync * accum_steps
    if len(data.train_x) < update:
        raise app.UsageError('%d training images make no update of %d (--batch_size x %d replicas x '
                             '%d --accum_steps)' % (len(data.train_x), update,
                                                   strategy.num_replicas_in_sync, accum_steps))
    if FLAGS.init_batch_size > len(data.train_x):
        raise app.UsageError('--init_batch_size=%d is more than the %d training images'
                             % (FLAGS.init_batch_size, len(data.train_x)))


def open_save_dir(chief):
    """Creates --save_dir and locks it for this run (the chief's lock and clean-up stand for
    the whole cluster); returns (the lock, what to remove if the run fails before its first
    checkpoint), both None on other workers."""
    created = savedir.Created(FLAGS.save_dir) if chief else None
    try:
        os.makedirs(FLAGS.save_dir, exist_ok=True)
        if not chief:
            return None, None
        lock = savedir.Lock(FLAGS.save_dir)
        lock.acquire()
    except savedir.InUse as e:
        raise app.UsageError(str(e))
    except OSError as e:
        raise app.UsageError('--save_dir=%s cannot be written (%s)' % (FLAGS.save_dir, e.strerror or e))
    savedir.remove_leftovers(FLAGS.save_dir)
    return lock, created


def main(argv):
    del argv
    check_flags()  # --verbose prints the flags (cli.run)

    keras.utils.set_random_seed(FLAGS.seed)  # Python, NumPy, TensorFlow and Keras initializers
    strategy = make_strategy()
    name = next(name for name in ('MultiWorkerMirroredStrategy', 'MirroredStrategy', 'OneDeviceStrategy')
                if isinstance(strategy, getattr(tf.distribute, name)))
    print('%s over %d replica(s)' % (name, strategy.num_replicas_in_sync))
    if FLAGS.mode == 'eval':
        evaluate(strategy)
        return
    kwargs, conditional, extra = run_config()
    cli.note_no_gpu(kwargs, quiet_tf.GPUS)
    data = load_data(conditional)
    check_data(data, strategy, extra['accum_steps'])
    print('each update: %d replica(s) x %d micro-batch(es) x %d images = %d images'
          % (strategy.num_replicas_in_sync, extra['accum_steps'], FLAGS.batch_size,
             strategy.num_replicas_in_sync * extra['accum_steps'] * FLAGS.batch_size))
    lock, created = open_save_dir(is_chief(strategy))
    run = None
    try:
        trainer = Trainer(strategy, kwargs, data.train_x.shape[1:],
                          num_labels=data.num_labels if conditional else 0,
                          learning_rate=FLAGS.learning_rate, lr_decay=FLAGS.lr_decay,
                          polyak_decay=FLAGS.polyak_decay, jit_compile=FLAGS.xla,
                          precision=FLAGS.precision, seed=FLAGS.seed, **extra)
        run = Run(trainer, data, strategy)
        run.start()
        run.train()
    except BaseException:
        if lock is not None:
            lock.release()
            lock = None
        if created is not None and not FLAGS.load_params and (run is None or run.saved is None):
            created.remove()  # a first run that wrote no checkpoint leaves nothing behind
        raise
    finally:
        if lock is not None:
            lock.release()


if __name__ == '__main__':
    cli.run(main)
