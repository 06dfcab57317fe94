"""A training run's save_dir, kept consistent whatever moment the run is killed at: one
run at a time (a lock file naming its owner), the test bits/dim history written before the
checkpoint that counts it, and what a failed first run created removed again (with
files.Created).

The checkpoints themselves are atomic already: tf.train.CheckpointManager writes a
checkpoint completely before its state file names it the latest."""

import fcntl
import glob
import json
import os
import shutil
import socket
import time

import numpy as np

from pixel_cnn_pp import files
from pixel_cnn_pp.config import ConfigError

LOCK_FILE = 'lock'


class InUse(ConfigError):
    """Another run holds the save_dir."""

    def __init__(self, message):
        super().__init__(message, 'save_dir')


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
                raise InUse('save_dir=%s is in use by another run (%s); wait for it to end or use '
                            'another save_dir' % (os.path.dirname(self.path), self._owner_text()))
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
                raise InUse('save_dir=%s holds the lock file of a run on host %s (%s); if that run '
                            'has ended, delete %s' % (os.path.dirname(self.path), owner.get('host'),
                                                      self._describe(owner), self.path))
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
