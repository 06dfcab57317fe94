"""When a training run stops or saves besides its epochs' schedule: a signal (SIGTERM, SIGINT,
SIGHUP) stops it at the next step boundary with a checkpoint, and a checkpoint is taken once
save_minutes have passed since the last one. One protocol, two policies: `Local` (one
process) and `Cluster` (MultiWorkerMirroredStrategy: every worker saves and stops at the
same step, agreed through TensorFlow's coordination service). run.py asks the policy at
every step boundary (`at_boundary`) and before each batch of the epoch's end (`abandon`)."""

import signal
import threading

import tensorflow as tf


class Preempted(Exception):
    """The run stopped on a signal (or, on a worker of a cluster, on another worker's
    signal) after writing a checkpoint of its last completed step."""

    def __init__(self, signum, step, checkpoint):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name if signum else 'another worker\'s preemption'
        super().__init__('stopped by %s at step %d; checkpoint %s' % (name, step, checkpoint))


class Signals:
    """SIGTERM, SIGINT and SIGHUP (the terminal closed) set `signum` instead of ending the
    process. The handler prints nothing: output can fail (the `| tee` a Ctrl-C ended too) or
    re-enter a write the signal interrupted, and must never cost the checkpoint; the run says
    so once it is written (Preempted). A second signal is ignored (the save in progress
    completes). Installed only from the main thread (signal's rule)."""

    CAUGHT = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self):
        self.signum, self._old = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.CAUGHT}
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}

    def _handle(self, signum, frame):
        del frame
        if self.signum is None:
            self.signum = signum


class Local:
    """The policy of one process. checkpoints: the run's checkpointing.Checkpoints (save,
    due, saved_step)."""

    def __init__(self, checkpoints):
        self.checkpoints, self.signals = checkpoints, Signals()

    def __enter__(self):
        self.signals.__enter__()
        return self

    def __exit__(self, *exc):
        self.signals.__exit__(*exc)

    def abandon(self):
        """Whether to abandon the epoch's end (evaluation, samples): a signal came."""
        return self.signals.signum is not None

    def stop(self, step):
        """The checkpoint of the last completed step (unless it has one), then Preempted."""
        self.checkpoints.save_once(step)
        raise Preempted(self.signals.signum, step, self.checkpoints.latest)

    def at_boundary(self, step, epoch_end=False):
        """After step: the stop a signal asked for, or the checkpoint the clock asks for."""
        del epoch_end
        if self.signals.signum is not None:
            self.stop(step)
        if self.checkpoints.time_is_up(step):
            self.checkpoints.save_on_time(step)


class AgreedSaves:
    """Time-based checkpoints that every worker of a cluster takes at the same step: the
    chief's clock decides at a step boundary, and the chief names the next step in the
    coordination service (the key-value store PreemptionCheckpointHandler agrees through);
    each other worker's watcher thread reads it and acknowledges before the chief trains that
    step, so no worker can have passed it. Between saves a step costs a set lookup; a save
    costs one round trip through the coordination service."""

    KEY = 'pixel_cnn_pp_save_at_%d'
    STOP = 'stop'

    def __init__(self, chief, workers, worker_id, context=None):
        """worker_id: this task's index among the chief and the workers (worker_index),
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


def worker_index(resolver):
    """The index of this task among the chief (0, if there is one) and the workers."""
    has_chief = 'chief' in resolver.cluster_spec().as_dict()
    return 0 if resolver.task_type == 'chief' else resolver.task_id + has_chief


class Cluster(Local):
    """The policy of a worker of a MultiWorkerMirroredStrategy cluster: tf.distribute's
    PreemptionCheckpointHandler agrees on the step at which every worker saves and stops (it
    watches this process's signals, so SIGINT counts as SIGTERM does, saves with
    checkpoints.save and stops with Preempted), and AgreedSaves on the time-based ones. The
    handler is given a manager of an empty checkpoint, never written: restoring is ours, and
    our checkpoint gets no variable of its own (checkpoints stay those of one process)."""

    def __init__(self, checkpoints, strategy, chief, step):
        super().__init__(checkpoints)
        resolver = strategy.cluster_resolver
        workers = sum(len(resolver.cluster_spec().as_dict().get(job, [])) for job in ('chief', 'worker'))
        self.chief, self.agreed = chief, AgreedSaves(chief, workers, worker_index(resolver))
        dummy = tf.train.CheckpointManager(tf.train.Checkpoint(), checkpoints.directory + '/no_such_dir',
                                           max_to_keep=1)

        def exit_fn():
            raise Preempted(self.signals.signum, step(), checkpoints.latest)

        termination = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=lambda: self.signals.signum is not None, exit_fn=exit_fn,
            save_fn=lambda: checkpoints.save(step()), grace_period=0)
        self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            resolver, dummy, termination_config=termination)

    def __exit__(self, *exc):
        self.agreed.close()
        super().__exit__(*exc)

    def abandon(self):
        """Every worker asks alike: the handler saves and raises Preempted itself."""
        self.handler.save_checkpoint_if_preempted()
        return False

    def at_boundary(self, step, epoch_end=False):
        if epoch_end:  # the epoch's end has its own agreed stop (abandon)
            return
        self.handler.save_checkpoint_if_preempted()
        if self.agreed.due(step) and self.checkpoints.saved_step != step:
            self.checkpoints.save_on_time(step)
        elif self.chief and self.checkpoints.time_is_up(step):
            self.agreed.announce(step + 1)


def is_chief(strategy):
    """Whether this process writes the run's files (the chief of a cluster, else worker 0)."""
    resolver = getattr(strategy, 'cluster_resolver', None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == 'chief':
        return True
    return resolver.task_type == 'worker' and resolver.task_id == 0 and \
        'chief' not in resolver.cluster_spec().as_dict()


def strategy_name(strategy):
    """tf.distribute's public name of the strategy's class."""
    return next((name for name in ('MultiWorkerMirroredStrategy', 'MirroredStrategy', 'OneDeviceStrategy')
                 if isinstance(strategy, getattr(tf.distribute, name))), type(strategy).__name__)


def is_cluster(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        bool(strategy.cluster_resolver.cluster_spec().jobs)
