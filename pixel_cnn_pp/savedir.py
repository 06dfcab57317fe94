"""A training run's save_dir, kept consistent whatever moment the run is killed at: one run
at a time (a lock file naming its owner: Lock); its checkpoints and history (Checkpoints: the
test bits/dim of each epoch and the train bits/dim of each step of the epoch in progress,
written before the checkpoint that counts them; a checkpoint complete before
CheckpointManager names it the latest, never one with a non-finite value; a write that
fails, disk full or I/O error or permission lost, a WriteError naming the file, the
previous checkpoint staying the latest); the clock of time-based checkpoints; what a kill
leaves behind removed (remove_leftovers; what a failed first run created: files.Created)."""

import contextlib
import errno
import fcntl
import glob
import json
import os
import re
import shutil
import socket
import time

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import checkpoints, files
from pixel_cnn_pp.config import ConfigError

LOCK_FILE = 'lock'


class InUse(ConfigError):
    """Another run holds the save_dir."""


class Lock:
    """An exclusive lock on a save_dir: a file holding the owner's pid, host and start time,
    flock()ed while the owner runs (the kernel releases it when the owner dies, however it
    dies). A lock file that nobody holds is stale: one written on this host is taken over
    with a warning; one of another host is refused (its flock may not reach across hosts)."""

    def __init__(self, save_dir):
        self.path = os.path.join(save_dir, LOCK_FILE)
        self.fd = None

    def acquire(self):
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise InUse('{save_dir} is in use by another run (%s); wait for it to end or use another '
                            '{save_dir:name}' % self._owner_text(), save_dir=os.path.dirname(self.path))
            # the owner may have removed the file between our open and flock: lock the file
            # that is there now
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                self.fd = fd
            else:
                os.close(fd)
        owner = self._read(self.fd)
        if owner:
            if owner.get('host') != socket.gethostname():
                os.close(self.fd)  # the other host's lock file stays
                self.fd = None
                raise InUse('{save_dir} holds the lock file of a run on host %s (%s); if that run has ended, '
                            'delete %s' % (owner.get('host'), self._describe(owner), self.path),
                            save_dir=os.path.dirname(self.path))
            print('warning: taking over the stale lock of %s, which is no longer running'
                  % self._describe(owner))
        info = json.dumps(dict(pid=os.getpid(), host=socket.gethostname(),
                               started=time.strftime('%Y-%m-%d %H:%M:%S')))
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, info.encode(), 0)
        os.fsync(self.fd)

    def release(self):
        if self.fd is not None:
            os.remove(self.path)
            os.close(self.fd)
            self.fd = None

    @staticmethod
    def _read(fd):
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or 'null')
        except ValueError:
            return {}

    @staticmethod
    def _describe(owner):
        return 'pid %s on %s, started %s' % (owner.get('pid'), owner.get('host'), owner.get('started'))

    def _owner_text(self):
        try:
            with open(self.path) as f:
                return self._describe(json.load(f))
        except (OSError, ValueError):
            return 'its lock file ' + self.path


@contextlib.contextmanager
def opened(save_dir, chief):
    """Within it, save_dir exists and, on the chief, is locked for this run (the chief's lock
    stands for the whole cluster) and cleared of what a kill left behind. A save_dir that
    cannot be made or locked: a ConfigError naming it, or a WriteError where the machine is
    at fault (disk full, I/O error)."""
    lock = Lock(save_dir) if chief else None
    try:
        os.makedirs(save_dir, exist_ok=True)
        if lock:
            lock.acquire()
    except OSError as e:
        if lock:
            lock.release()  # a lock file written in part
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):  # the machine's, not the user's
            raise write_error(e.filename or (lock.path if lock else save_dir), e) from None
        raise ConfigError('{save_dir} cannot be written (%s)' % (e.strerror or e), save_dir=save_dir) from None
    try:
        if chief:
            remove_leftovers(save_dir)
        yield
    finally:
        if lock:
            lock.release()


def read_history(path, epochs):
    """The test bits/dim of epochs 0..epochs-1 that the history file at `path` holds. It is
    written before the checkpoint that counts its last epoch, so it may hold more (a run
    killed in between): those are dropped, as the resumed run computes them again."""
    if not os.path.exists(path):
        history = np.zeros([0])
    else:
        with np.load(path) as f:
            history = f['test_bpd']
    if len(history) < epochs:
        print('warning: %s holds the test bits/dim of %d epochs, the checkpoint %d; the others are '
              'NaN' % (path, len(history), epochs))
        history = np.concatenate([history, np.full([epochs - len(history)], np.nan)])
    return list(history[:epochs])


def write_history(path, test_bpd, **more):
    """Atomically, so that a kill or a failed write (disk full) leaves the old history or the
    new one, never part of one. more: other arrays of the run's progress, kept alongside."""
    files.write_atomically(path, lambda f: np.savez(f, test_bpd=np.array(test_bpd, np.float64), **more))


def remove_leftovers(save_dir):
    """What a kill can leave behind: temporary files of an atomic write, and the _temp
    folder of a checkpoint being written."""
    for path in glob.glob(os.path.join(save_dir, '*.tmp*')) + glob.glob(os.path.join(save_dir, '*_temp')):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


MAX_TO_KEEP = 3  # checkpoints the chief keeps (CheckpointManager deletes older ones)
# The errors of a write a machine can give (TensorFlow's savers report them as text).
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


class WriteError(OSError):
    """A file of the run could not be written (the OSError's errno, strerror and filename);
    `latest` is the run's latest checkpoint, which stays the one to resume from."""
    latest = None


def write_error(path, e):
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


def written(path, write):
    """write(); a failure to write (disk full, I/O error, permission) is a WriteError naming path."""
    try:
        return write()
    except (OSError, tf.errors.OpError) as e:
        raise write_error(path, e) from None


class Checkpoints:
    """The checkpoints of a Trainer in `directory` (the save_dir, or a worker's own folder
    under it) and the history file at `history`, which only the chief writes. `clock` and
    save_minutes: the time-based schedule (time_is_up)."""

    def __init__(self, trainer, directory, history, chief, save_minutes, clock):
        self.trainer, self.directory, self.history, self.chief = trainer, directory, history, chief
        self.save_minutes, self.clock = save_minutes, clock
        self.manager = tf.train.CheckpointManager(trainer.checkpoint, directory,
                                                  max_to_keep=MAX_TO_KEEP if chief else 1)
        self.test_bpd = []  # of the epochs done
        self.train_bpd, self.train_epoch = [], 0  # of each step of epoch `train_epoch` so far
        self.saved = self.saved_step = None  # the last checkpoint this run wrote, its step
        self.last_save_time = clock()

    @property
    def latest(self):
        """The run's latest checkpoint: the one this process wrote last, else the newest found."""
        return self.saved or self.manager.latest_checkpoint or latest(self.directory)

    def refuse_existing(self, save_dir):
        """A new run: its folder must hold no checkpoint (ConfigError naming save_dir)."""
        found = checkpoints.run_checkpoints(self.directory)
        if found:
            raise ConfigError('{save_dir} already holds checkpoints (%s): pass {resume} to continue it, or use '
                              'another {save_dir:name}' % os.path.basename(found[0]), save_dir=save_dir, resume=True)

    def restore(self):
        """The newest readable checkpoint restored, and the history of its epochs and of the
        steps of its epoch in progress; returns its path."""
        trainer = self.trainer
        path, _ = checkpoints.newest_readable(self.directory, lambda p: trainer.checkpoint.restore(p).assert_consumed())
        epoch, done = int(trainer.epoch.numpy()), int(trainer.epoch_step.numpy())
        self.test_bpd = read_history(self.history, epoch)
        self.train_epoch, self.train_bpd = epoch, self._read_train_bpd(epoch, done)
        self.saved_step = int(trainer.optimizer.step.numpy())
        return path

    def _read_train_bpd(self, epoch, done):
        """The train bits/dim of the first `done` steps of `epoch`, from the history file (which
        may be ahead of the checkpoint: a kill between the two writes)."""
        if done:
            try:
                with np.load(self.history) as f:
                    if 'train_bpd' in f and int(f['train_bpd_epoch']) == epoch and len(f['train_bpd']) >= done:
                        return [float(v) for v in f['train_bpd'][:done]]
            except (OSError, ValueError, KeyError):
                pass
            print('note: %s does not hold the train bits/dim of the %d steps of epoch %d before this '
                  'resume; the epoch\'s line averages the steps after it' % (self.history, done, epoch))
        return []

    def start_epoch(self, epoch):
        """The train bits/dim list of `epoch` (those of its steps before a resume kept)."""
        if int(self.trainer.epoch_step.numpy()) == 0 or self.train_epoch != epoch:
            self.train_bpd, self.train_epoch = [], epoch
        return self.train_bpd

    def save(self, step):
        """The history, then the checkpoint of `step`: a kill in between leaves a history one
        epoch ahead, which restore truncates. A checkpoint whose write fails is removed."""
        if not self.trainer.all_finite():
            raise FloatingPointError('the weights at step %d are not all finite; no checkpoint of them '
                                     'is written' % step)
        if self.chief:
            written(self.history, lambda: write_history(
                self.history, self.test_bpd, train_bpd=np.array(self.train_bpd, np.float64),
                train_bpd_epoch=np.int64(self.train_epoch)))
        prefix = os.path.join(self.directory, 'ckpt-%d' % step)
        try:
            self.saved = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as e:
            _remove_partial(prefix)
            raise write_error(prefix, e) from None
        self.saved_step, self.last_save_time = step, self.clock()
        return self.saved

    def save_once(self, step):
        """save(step) unless this run saved that step already."""
        if self.saved_step != step:
            self.save(step)

    def time_is_up(self, step):
        """Whether save_minutes have passed since the last checkpoint, which is not of `step`."""
        return bool(self.save_minutes) and self.saved_step != step and \
            self.clock() - self.last_save_time >= 60. * self.save_minutes

    def save_on_time(self, step):
        minutes = (self.clock() - self.last_save_time) / 60.
        self.save(step)
        print('step %d: checkpoint %s, %.1f minutes after the last' % (step, self.saved, minutes), flush=True)


def latest(directory):
    """The newest checkpoint in directory, or None."""
    found = checkpoints.run_checkpoints(directory) if os.path.isdir(directory) else []
    return found[0] if found else None


def _remove_partial(prefix):
    """What a failed save of checkpoint `prefix` left."""
    for p in glob.glob(glob.escape(prefix) + '.*') + glob.glob(glob.escape(prefix) + '_temp*'):
        if os.path.isdir(p):
            tf.io.gfile.rmtree(p)
        else:
            try:
                os.remove(p)
            except OSError:
                pass
