"""A training run: the official train.py's loop (epochs of training steps, the test
bits/dim of the Polyak-averaged weights, samples and checkpoints every save_interval epochs)
in a save_dir that survives real machines:

- a kill at any moment leaves it consistent and resumable (checkpoints complete before they
  count, the history written before the checkpoint that counts it);
- resume is exact: data order, dropout and mutation are stateless functions of the seed and
  the step, and config.json records every setting that decides them (config.resume);
- SIGTERM, SIGINT or SIGHUP stops at the next step boundary with a checkpoint of the last
  completed step (`Preempted`), written before anything is printed; under MultiWorkerMirroredStrategy every worker stops at the same step
  (tf.distribute's PreemptionCheckpointHandler agrees on it); at the epoch's end the
  evaluation and the samples are abandoned at their next batch (the checkpoint is of the
  epoch's last step; the resumed run evaluates and samples that epoch);
- a checkpoint at the first step boundary once save_minutes have passed since the last one
  (under a cluster: by the chief's clock, at a step every worker agrees on);
- a write that fails (disk full, I/O error, permission lost) stops the run with a
  `WriteError` naming the path; the previous checkpoint stays the latest.

Separate from training.py, which holds the steps' mathematics (Trainer, Evaluator): this
module holds the run's lifecycle around them (save_dir, lock, cadence, signals, resume)."""

import errno
import glob
import os
import re
import signal
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from pixel_cnn_pp import checkpoints, config as config_lib, files, images, progress, sampling, savedir, training
from pixel_cnn_pp import data as data_lib
from pixel_cnn_pp.config import ConfigError

MAX_TO_KEEP = 3  # checkpoints the chief keeps (CheckpointManager deletes older ones)


class Preempted(Exception):
    """The run stopped on a signal (or, on a worker of a cluster, on another worker's
    signal) after writing a checkpoint of its last completed step."""

    def __init__(self, signum, step, checkpoint):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name if signum else 'another worker\'s preemption'
        super().__init__('stopped by %s at step %d; checkpoint %s' % (name, step, checkpoint))


class WriteError(OSError):
    """A file of the run could not be written (the OSError's errno, strerror and filename);
    `latest` is the run's latest checkpoint, which stays the one to resume from."""
    latest = None


# The errors of a write a machine can give (TensorFlow's savers report them as text).
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def _write_error(path, e):
    """The WriteError of path for an OSError or a TensorFlow OpError (whose message holds the
    system's error text among op names: the text alone is kept)."""
    if isinstance(e, OSError):
        return WriteError(e.errno or errno.EIO, e.strerror or str(e), path)
    text = getattr(e, 'message', None) or str(e)
    for code in WRITE_ERRNOS:
        if os.strerror(code) in text:
            return WriteError(code, os.strerror(code), path)
    text = re.sub(r'\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]', '', text).strip()
    return WriteError(errno.EIO, text.splitlines()[0] if text else type(e).__name__, path)


def _remove_partial_checkpoint(prefix):
    for p in glob.glob(glob.escape(prefix) + '.*') + glob.glob(glob.escape(prefix) + '_temp*'):
        if os.path.isdir(p):
            tf.io.gfile.rmtree(p)
        else:
            try:
                os.remove(p)
            except OSError:
                pass


class _StopRequest:
    """SIGTERM, SIGINT and SIGHUP (the terminal closed) set `signum` instead of ending the
    process: the loop stops at the next step boundary, writes its checkpoint, and only then
    says so (Preempted). The handler prints nothing: output can fail (the `| tee` a Ctrl-C
    ended too) or re-enter a write the signal interrupted, and must never cost the
    checkpoint. A second signal while stopping is ignored (the save in progress completes).
    Installed only from the main thread (signal's rule)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self):
        self.signum, self._old = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}

    def _handle(self, signum, frame):
        del frame
        if self.signum is None:
            self.signum = signum


class _AgreedSaves:
    """Time-based checkpoints that every worker of a cluster takes at the same step: the
    chief's clock decides at a step boundary, and the chief names the next step in the
    coordination service (the key-value store PreemptionCheckpointHandler agrees through);
    each other worker's watcher thread reads it and acknowledges before the chief trains that
    step, so no worker can have passed it. Between saves a step costs a set lookup; a save
    costs one round trip through the coordination service."""

    KEY = 'pixel_cnn_pp_save_at_%d'
    STOP = 'stop'

    def __init__(self, chief, workers, worker_id, context=None):
        """worker_id: this task's index among the chief and the workers (_worker_index),
        which names its acknowledgements; context: the coordination service's client
        (TensorFlow's eager context unless given)."""
        if context is None:
            from tensorflow.python.eager import context as eager
            context = eager.context()
        self.context, self.chief, self.workers, self.worker_id = context, chief, workers, worker_id
        self.steps, self.announced = set(), 0
        self.watcher = None
        if not chief:  # started once worker_id is known: its first acknowledgement names it
            self.watcher = threading.Thread(target=self._watch, daemon=True, name='AgreedSavesWatcher')
            self.watcher.start()

    def _watch(self):
        n = 0
        try:
            while True:
                value = self.context.get_config_key_value(self.KEY % n)
                if value == self.STOP:
                    return
                self.steps.add(int(value))  # before the acknowledgement: seen at that boundary
                self.context.set_config_key_value('%s_ack_%d' % (self.KEY % n, self.worker_id), '1')
                n += 1
        except Exception:  # noqa: BLE001 - the service ends with the chief: nothing left to agree
            return

    def announce(self, step):
        """On the chief: every worker saves at `step` (the next step boundary)."""
        key = self.KEY % self.announced
        self.context.set_config_key_value(key, str(step))
        for i in range(1, self.workers):
            self.context.get_config_key_value('%s_ack_%d' % (key, i))
        self.announced += 1
        self.steps.add(step)

    def due(self, step):
        if step in self.steps:
            self.steps.discard(step)
            return True
        return False

    def close(self):
        if self.chief:
            try:
                self.context.set_config_key_value(self.KEY % self.announced, self.STOP)
            except Exception:  # noqa: BLE001
                pass


def is_chief(strategy):
    """Whether this process writes the run's files (the chief of a cluster, else worker 0)."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == 'chief':
        return True
    return resolver.task_type == 'worker' and resolver.task_id == 0 and \
        'chief' not in resolver.cluster_spec().as_dict()


def _worker_index(resolver):
    """The index of this task among the chief (0, if there is one) and the workers."""
    has_chief = 'chief' in resolver.cluster_spec().as_dict()
    return 0 if resolver.task_type == 'chief' else resolver.task_id + has_chief


def default_strategy():
    """One device: the first GPU, else the CPU."""
    return tf.distribute.OneDeviceStrategy('/gpu:0' if tf.config.list_physical_devices('GPU') else '/cpu:0')


def resume_configs(save_dir, given):
    """config.resume on save_dir's config.json; a save_dir with no config.json is a
    ConfigError."""
    saved = config_lib.read(save_dir)
    if saved is None:
        raise ConfigError('save_dir=%s holds no %s: no run to continue (resume=True continues the '
                          'run that save_dir holds)' % (save_dir, config_lib.CONFIG_FILE), 'save_dir', 'resume')
    return config_lib.resume(saved, given, save_dir)


def check_data(data, model_config, train_config):
    """What needs the data to check, before anything is written."""
    shape = tuple(data.train_x.shape[1:])
    if shape != model_config.image_shape:
        raise ConfigError('the data set\'s images are %s but image_shape=%s'
                          % ('x'.join(map(str, shape)), 'x'.join(map(str, model_config.image_shape))),
                          'image_shape')
    if model_config.num_labels and model_config.num_labels != data.num_labels:
        raise ConfigError('num_labels=%d but the data set has %s labels'
                          % (model_config.num_labels, data.num_labels), 'num_labels')
    update = train_config.update_images
    if len(data.train_x) < update:
        raise ConfigError('%d training images make no update of %d (batch_size x %d replicas x %d '
                          'accum_steps)' % (len(data.train_x), update, train_config.replicas,
                                            train_config.accum_steps), 'batch_size', 'accum_steps')
    if train_config.init_batch_size > len(data.train_x):
        raise ConfigError('init_batch_size=%d is more than the %d training images'
                          % (train_config.init_batch_size, len(data.train_x)), 'init_batch_size')


def train(model_config, train_config, save_dir, data, strategy=None, resume=False, clock=time.monotonic):
    """Trains a PixelCNNPP of `model_config` with `train_config` into `save_dir` (resume=True:
    from its newest readable checkpoint, configs as config.resume gave them); data is a
    data.Data. Returns the finished Run. Raises ConfigError (before anything is written),
    Preempted, WriteError, FloatingPointError (diverged)."""
    strategy = strategy or default_strategy()
    if train_config.replicas != strategy.num_replicas_in_sync:
        raise ConfigError('replicas=%d but the strategy has %d replicas'
                          % (train_config.replicas, strategy.num_replicas_in_sync), 'replicas')
    check_data(data, model_config, train_config)
    run = Run(model_config, train_config, save_dir, data, strategy, resume, clock)
    try:
        run.open()
        run.start()
        run.train()
    except BaseException as e:
        if isinstance(e, WriteError):
            found = checkpoints.run_checkpoints(run.ckpt_dir) if os.path.isdir(run.ckpt_dir) else []
            e.latest = run.manager.latest_checkpoint if run.manager else found[0] if found else None
        run.close(failed=True)
        raise
    run.close()
    return run


class Run:
    """The state of one training run: the Trainer, its CheckpointManager, the history, the
    TensorBoard writer, the lock; `train` is the official train.py's loop."""

    def __init__(self, model_config, train_config, save_dir, data, strategy, resume=False,
                 clock=time.monotonic):
        self.model_config, self.config, self.save_dir = model_config, train_config, save_dir
        self.data, self.strategy, self.resume, self.clock = data, strategy, resume, clock
        self.chief = is_chief(strategy)
        self.multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
            bool(strategy.cluster_resolver.cluster_spec().jobs)
        self.global_batch = train_config.batch_size * strategy.num_replicas_in_sync
        self.update_images = self.global_batch * train_config.accum_steps  # the images of one step
        # every worker of a multi-worker run must save; the others keep their (identical)
        # latest checkpoint aside
        task_id = getattr(getattr(strategy, 'cluster_resolver', None), 'task_id', 0)
        self.ckpt_dir = save_dir if self.chief else os.path.join(save_dir, 'worker%d' % task_id)
        self.history_path = os.path.join(save_dir, 'test_bpd_%s.npz' % train_config.data_set)
        self.trainer = self.manager = self.writer = self.lock = self.created = None
        self.handler = self.agreed = None
        self.test_bpd = []
        # the train bits/dim of each step of epoch `train_epoch_of` so far (the history file
        # keeps them, so that a resumed epoch's line averages all its steps)
        self.train_bpd, self.train_epoch_of = [], 0
        self.saved = None  # the last checkpoint this run wrote
        self.saved_step = None
        self.last_save_time = None
        self.stop = _StopRequest()

    # ------------------------------------------------------------------ the save_dir

    def open(self):
        """Creates save_dir and locks it for this run (the chief's lock and clean-up stand for
        the whole cluster)."""
        self.created = files.Created(self.save_dir) if self.chief else None
        try:
            os.makedirs(self.save_dir, exist_ok=True)
            if self.chief:
                self.lock = savedir.Lock(self.save_dir)
                self.lock.acquire()
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):  # the machine's, not the user's
                raise _write_error(e.filename or (self.lock.path if self.lock else self.save_dir), e) from None
            raise ConfigError('save_dir=%s cannot be written (%s)' % (self.save_dir, e.strerror or e),
                              'save_dir') from None
        if self.chief:
            savedir.remove_leftovers(self.save_dir)

    def close(self, failed=False):
        """Closes TensorBoard and releases the lock; a first run that failed before its first
        checkpoint leaves nothing behind."""
        if self.agreed is not None:
            self.agreed.close()
            self.agreed = None
        if self.writer is not None:
            try:
                self.writer.close()
            except tf.errors.OpError:
                pass
            self.writer = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if failed and self.created is not None and not self.resume and self.saved is None:
            self.created.remove()

    # ------------------------------------------------------------------ start

    def start(self):
        m, c = self.model_config, self.config
        print('%s over %d replica(s); each update: %d replica(s) x %d micro-batch(es) x %d images = %d images'
              % (type(self.strategy).__name__, c.replicas, c.replicas, c.accum_steps, c.batch_size, c.update_images))
        keras.utils.set_random_seed(c.seed)  # the initial weights: Python, NumPy, TF, Keras
        with self.strategy.scope():
            self.trainer = trainer = training.Trainer(
                self.strategy, dict(m.model_kwargs(), dropout_p=c.dropout_p), m.image_shape,
                num_labels=m.num_labels, learning_rate=c.learning_rate, lr_decay=c.lr_decay,
                polyak_decay=c.polyak_decay, jit_compile=c.xla, precision=c.precision,
                mutation_rate=c.mutation_rate, l2_weight=c.l2_weight, seed=c.seed,
                accum_steps=c.accum_steps, recompute=c.recompute)
        self.manager = tf.train.CheckpointManager(trainer.checkpoint, self.ckpt_dir,
                                                  max_to_keep=MAX_TO_KEEP if self.chief else 1)
        if self.resume:
            path, _ = checkpoints.newest_readable(
                self.ckpt_dir, lambda p: trainer.checkpoint.restore(p).assert_consumed())
            print('restoring parameters from', path)
            self.test_bpd = savedir.read_history(self.history_path, int(trainer.epoch.numpy()))
            self.train_epoch_of = int(trainer.epoch.numpy())
            self.train_bpd = self._read_train_bpd(self.train_epoch_of, int(trainer.epoch_step.numpy()))
            self.saved_step = int(trainer.optimizer.step.numpy())
            if self.chief:
                self._write(config_lib.CONFIG_FILE, lambda: config_lib.write(self.save_dir, (m, c)))
        else:
            found = checkpoints.run_checkpoints(self.ckpt_dir)
            if found:
                raise ConfigError('save_dir=%s already holds checkpoints (%s): pass resume=True to '
                                  'continue it, or use another save_dir'
                                  % (self.save_dir, os.path.basename(found[0])), 'save_dir', 'resume')
            print('initializing the model...')
            first = data_lib.epoch_order(len(self.data.train_x), c.seed, 0)[:c.init_batch_size]
            y = self.data.train_y[first] if trainer.num_labels else None
            trainer.initialize(images.scale(self.data.train_x[first]), y)
            if self.chief:
                self._write(config_lib.CONFIG_FILE, lambda: config_lib.write(self.save_dir, (m, c)))
        self.writer = tf.summary.create_file_writer(os.path.join(self.save_dir, 'tensorboard')) \
            if self.chief else tf.summary.create_noop_writer()
        if self.multi_worker:
            self.handler = self._preemption_handler()
            resolver = self.strategy.cluster_resolver
            self.agreed = _AgreedSaves(self.chief, sum(len(resolver.cluster_spec().as_dict().get(job, []))
                                                       for job in ('chief', 'worker')), _worker_index(resolver))
        self.last_save_time = self.clock()
        print('starting training')
        sys.stdout.flush()

    def _read_train_bpd(self, epoch, done):
        """The train bits/dim of the first `done` steps of `epoch`, from the history file (which
        may be ahead of the checkpoint: a kill between the two writes)."""
        if done:
            try:
                with np.load(self.history_path) as f:
                    if 'train_bpd' in f and int(f['train_bpd_epoch']) == epoch and len(f['train_bpd']) >= done:
                        return [float(v) for v in f['train_bpd'][:done]]
            except (OSError, ValueError, KeyError):
                pass
            print('note: %s does not hold the train bits/dim of the %d steps of epoch %d before this '
                  'resume; the epoch\'s line averages the steps after it' % (self.history_path, done, epoch))
        return []

    def _preemption_handler(self):
        """tf.distribute's PreemptionCheckpointHandler, for the cluster to agree on the step
        at which every worker saves and stops. It watches our stop request (so SIGINT counts
        as SIGTERM does), saves with our save() and stops with Preempted. It is given a
        manager of an empty checkpoint, never written: restoring is ours, and our checkpoint
        gets no variable of its own (checkpoints stay those of a single-process run)."""
        dummy = tf.train.CheckpointManager(tf.train.Checkpoint(), os.path.join(self.ckpt_dir, 'no_such_dir'),
                                           max_to_keep=1)

        def exit_fn():
            raise Preempted(self.stop.signum, int(self.trainer.optimizer.step.numpy()), self.saved)

        termination = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=lambda: self.stop.signum is not None, exit_fn=exit_fn,
            save_fn=lambda: self.save(), grace_period=0)
        return tf.distribute.experimental.PreemptionCheckpointHandler(
            self.strategy.cluster_resolver, dummy, termination_config=termination)

    # ------------------------------------------------------------------ writes

    def _write(self, path, write):
        """write(); a failure to write (disk full, I/O error, permission) is a WriteError
        naming the file."""
        try:
            return write()
        except (OSError, tf.errors.OpError) as e:
            raise _write_error(os.path.join(self.save_dir, path) if not os.path.isabs(path) else path, e) \
                from None

    def save(self):
        """The history first, then the checkpoint: a kill in between leaves a history one
        epoch ahead, which resume truncates to the checkpoint's epochs. A checkpoint is
        complete before CheckpointManager names it the latest, and never holds a non-finite
        value; one whose write fails is removed, the previous one stays the latest."""
        step = int(self.trainer.optimizer.step.numpy())
        if not self.trainer.all_finite():
            raise FloatingPointError('the weights at step %d are not all finite; no checkpoint of them '
                                     'is written' % step)
        if self.chief:
            self._write(self.history_path, lambda: savedir.write_history(
                self.history_path, self.test_bpd, train_bpd=np.array(self.train_bpd, np.float64),
                train_bpd_epoch=np.int64(self.train_epoch_of)))
        prefix = os.path.join(self.ckpt_dir, 'ckpt-%d' % step)
        try:
            self.saved = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as e:
            _remove_partial_checkpoint(prefix)
            raise _write_error(prefix, e) from None
        self.saved_step, self.last_save_time = step, self.clock()
        return self.saved

    def write_samples(self, epoch):
        """The epoch's num_samples batches of samples (PNG, .npz, TensorBoard); False when a
        stop request abandoned them (asked before each batch), nothing written."""
        trainer, c = self.trainer, self.config
        drawn = []
        for i in range(c.num_samples):
            if self._stop_requested():
                return False
            y = np.arange(self.global_batch) % trainer.num_labels if trainer.num_labels else None
            h = trainer.one_hot(y) if y is not None else None
            drawn.append(sampling.sample(trainer.ema_model, self.global_batch, h=h,
                                          seed=c.seed * 100003 + epoch * 101 + i,
                                          image_shape=self.model_config.image_shape,
                                          method='naive' if trainer.model.energy_distance else 'fast'))
        drawn = np.concatenate(drawn)
        prefix = os.path.join(self.save_dir, '%s_sample%d' % (c.data_set, epoch))
        if self.chief:
            self._write(prefix + '.png', lambda: images.write_samples(drawn, prefix))
        with self.writer.as_default():
            tf.summary.image('samples', drawn[:16], step=int(trainer.optimizer.step.numpy()), max_outputs=16)
        print('wrote %s.png and .npz' % prefix)
        return True

    # ------------------------------------------------------------------ stopping

    def _stop_requested(self):
        """Whether to abandon the epoch's end (evaluation, samples) for a stop: a signal here;
        under a cluster, the PreemptionCheckpointHandler (asked alike by every worker) saves and
        raises Preempted itself."""
        if self.handler is not None:
            self.handler.save_checkpoint_if_preempted()
            return False
        return self.stop.signum is not None

    def _stop_now(self):
        """The checkpoint of the last completed step (unless it has one), then Preempted."""
        step = int(self.trainer.optimizer.step.numpy())
        if self.saved_step != step:
            self.save()
        raise Preempted(self.stop.signum, step, self.saved or self.manager.latest_checkpoint)

    def _after_step(self, epoch_end=False):
        """At a step boundary: the time-based checkpoint, and the stop a signal asked for
        (under a cluster, the PreemptionCheckpointHandler's agreed stop instead)."""
        step = int(self.trainer.optimizer.step.numpy())
        if self.handler is not None:
            if not epoch_end:
                self.handler.save_checkpoint_if_preempted()
                if self.agreed.due(step) and self.saved_step != step:
                    self._time_save(step)
                elif self.chief and self._time_is_up(step):
                    self.agreed.announce(step + 1)
            return
        if self.stop.signum is not None:
            self._stop_now()
        if self._time_is_up(step):
            self._time_save(step)

    def _time_is_up(self, step):
        return bool(self.config.save_minutes) and self.saved_step != step and \
            self.clock() - self.last_save_time >= 60. * self.config.save_minutes

    def _time_save(self, step):
        minutes = (self.clock() - self.last_save_time) / 60.
        self.save()
        print('step %d: checkpoint %s, %.1f minutes after the last' % (step, self.saved, minutes), flush=True)

    # ------------------------------------------------------------------ the loop

    def train_epoch(self, epoch, steps):
        """The epoch's training steps (from where a resumed run stopped): (its mean train
        bits/dim, its images/s). images/s counts the wall time of the steps and of waiting
        for their batches, not evaluation, sampling or checkpoints: the progress bar shows
        the epoch's value so far, TensorBoard the whole epoch's. The mean counts the steps that
        ran before a resume too; images/s is None when none ran in this process."""
        trainer, c = self.trainer, self.config
        skip = int(trainer.epoch_step.numpy())
        if skip == 0 or self.train_epoch_of != epoch:
            self.train_bpd, self.train_epoch_of = [], epoch
        train_losses, ran = self.train_bpd, 0
        batches = data_lib.train_batches(self.strategy, self.data, c.batch_size * c.accum_steps, c.seed,
                                         epoch, skip=skip, max_steps=steps)
        bar = progress.bar(steps, enabled=c.progress, stateful_metrics=['bits_per_dim', 'images/s'])
        seconds = 0.
        t0 = time.time()
        for k, batch in enumerate(batches, start=skip + 1):
            try:
                nats = trainer.train_step(batch)
            except FloatingPointError as e:
                raise training.Diverged('%s The latest checkpoint, %s, is from before it.'
                                        % (e, self.manager.latest_checkpoint), *getattr(e, 'fields', ())) from None
            seconds += time.time() - t0
            train_losses.append(trainer.bits_per_dim(nats, self.update_images))
            ran += 1
            bar.update(k, [('bits_per_dim', train_losses[-1]), ('images/s', ran * self.update_images / seconds)])
            step = int(trainer.optimizer.step.numpy())
            if c.save_steps and step % c.save_steps == 0 and k < steps:
                self.save()
            if k < steps or self.handler is not None:  # the epoch's end has its own stop
                self._after_step()
            t0 = time.time()
        mean = float(np.mean(train_losses)) if train_losses else float('nan')
        return mean, ran * self.update_images / max(seconds, 1e-9) if ran else None

    def train(self):
        """The official train.py's loop from the current epoch to max_epochs, stopping early
        with Preempted on a signal."""
        with self.stop:
            self._train()

    def _train(self):
        trainer, c = self.trainer, self.config
        test_batches = data_lib.test_batches(self.strategy, self.data, c.batch_size)
        steps = data_lib.steps_per_epoch(len(self.data.train_x), self.update_images)
        if c.max_steps_per_epoch:
            steps = min(steps, c.max_steps_per_epoch)
        saved_epoch = None
        for epoch in range(int(trainer.epoch.numpy()), c.max_epochs):
            begin = time.time()
            train_bpd, images_per_second = self.train_epoch(epoch, steps)
            # Until the epoch is counted done below, a checkpoint is of its last step: a stop
            # abandons the evaluation or the samples, and the resumed run does them again.
            test_loss = trainer.evaluate(test_batches, stop=self._stop_requested)
            if test_loss is None:
                self._stop_now()
            print('Iteration %d, time = %ds, train bits_per_dim = %.4f, test bits_per_dim = %.4f'
                  % (epoch, time.time() - begin, train_bpd, test_loss))
            sys.stdout.flush()
            if epoch % c.save_interval == 0 and c.num_samples and not self.write_samples(epoch):
                self._stop_now()
            self.test_bpd.append(test_loss)
            trainer.epoch.assign(epoch + 1)
            trainer.epoch_step.assign(0)
            step = int(trainer.optimizer.step.numpy())
            with self.writer.as_default():
                tf.summary.scalar('train/bits_per_dim', train_bpd, step=step)
                tf.summary.scalar('test/bits_per_dim', test_loss, step=step)
                tf.summary.scalar('lr', float(trainer.optimizer.lr.numpy()), step=step)
                if images_per_second is not None:
                    tf.summary.scalar('images_per_second', images_per_second, step=step)
            if epoch % c.save_interval == 0:
                self.save()
                saved_epoch = epoch
            self._after_step(epoch_end=True)
        if saved_epoch != c.max_epochs - 1 and int(trainer.epoch.numpy()) == c.max_epochs:
            self.save()
