"""A training run's checkpoints and its history (test bits/dim of each epoch, train bits/dim of
each step of the epoch in progress), written so that a kill at any moment leaves them
consistent: the history before the checkpoint that counts it, a checkpoint complete before
CheckpointManager names it the latest, never one with a non-finite value; a write that fails
(disk full, I/O error, permission lost) is a WriteError naming the file, the previous
checkpoint staying the latest. Also the clock of time-based checkpoints (save_minutes)."""

import errno
import glob
import os
import re

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import checkpoints, savedir
from pixel_cnn_pp.config import ConfigError

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
        if self.saved or self.manager.latest_checkpoint:
            return self.saved or self.manager.latest_checkpoint
        found = checkpoints.run_checkpoints(self.directory) if os.path.isdir(self.directory) else []
        return found[0] if found else None

    def refuse_existing(self, save_dir):
        """A new run: its folder must hold no checkpoint (ConfigError naming save_dir)."""
        found = checkpoints.run_checkpoints(self.directory)
        if found:
            raise ConfigError('save_dir=%s already holds checkpoints (%s): pass resume=True to continue '
                              'it, or use another save_dir' % (save_dir, os.path.basename(found[0])),
                              'save_dir', 'resume')

    def restore(self):
        """The newest readable checkpoint restored, and the history of its epochs and of the
        steps of its epoch in progress; returns its path."""
        trainer = self.trainer
        path, _ = checkpoints.newest_readable(self.directory, lambda p: trainer.checkpoint.restore(p).assert_consumed())
        epoch, done = int(trainer.epoch.numpy()), int(trainer.epoch_step.numpy())
        self.test_bpd = savedir.read_history(self.history, epoch)
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
            written(self.history, lambda: savedir.write_history(
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
