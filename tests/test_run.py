"""The run's lifecycle (pixel_cnn_pp.run) on real machines: a real full disk, a signal at the
epoch's end (evaluation, samples), time-based checkpoints agreed by two workers."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, script_env

TINY = ['--nr_resnet=1', '--nr_filters=8', '--nr_logistic_mix=2', '--batch_size=4',
        '--init_batch_size=4', '--noprogress', '--seed=7']


def write_npz(path, n_train=24, n_test=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, train_x=rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8),
             test_x=rng.integers(0, 256, (n_test, size, size, 3), dtype=np.uint8))
    return str(path)


def train_script(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'train.py')] + list(args), env=env or script_env(TF_CPP_MIN_LOG_LEVEL=None),
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def tmpfs(size):
    """A tmpfs of `size` (mount's syntax, e.g. '2m') on a fresh folder, unmounted afterwards;
    the test is skipped where mounting is not permitted (not root, a container without
    CAP_SYS_ADMIN)."""
    where = tempfile.mkdtemp(prefix='pixelcnn_tmpfs_')
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=' + size, 'tmpfs', where],
                             capture_output=True, text=True) if os.geteuid() == 0 else None
    if mounted is None or mounted.returncode:
        os.rmdir(where)
        pytest.skip('cannot mount a tmpfs here (%s)' % ('not root' if mounted is None else mounted.stderr.strip()))
    try:
        yield where
    finally:
        if subprocess.run(['umount', where]).returncode:  # busy: a file still open
            subprocess.run(['umount', '-l', where], check=True)
        os.rmdir(where)


@pytest.mark.slow
def test_a_real_full_disk_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    """train.py with its save_dir on a 1.6 MB tmpfs, a checkpoint every step: config.json and
    ckpt-1 and ckpt-2 fit (about 0.7 MB each), ckpt-3 meets a real ENOSPC. Exit status 3, one
    line naming ckpt-3 and the system's error, the latest checkpoint ckpt-2 (it loads), nothing
    of ckpt-3 left, no lock. Then the disk filled to the last byte: the resume's lock file
    cannot be written, the same message, and what the run held stays. Space freed (the filler, ckpt-1), the
    resume finishes."""
    data = write_npz(tmp_path / 'data.npz', n_train=48)
    args = TINY + ['--data_set=npz', '--data_dir=' + data, '--save_steps=1', '--max_epochs=1', '--num_samples=0']
    with tmpfs('1600k') as disk:
        save = os.path.join(disk, 'save')
        out = train_script('--save_dir=' + save, *args)
        assert out.returncode == 3, out.stderr
        assert out.stderr.splitlines() == ['train.py: error: cannot write %s/ckpt-3 (No space left on device); the run stopped, its '
                          'latest checkpoint is %s/ckpt-2' % (save, save)], out.stderr
        assert sorted(os.listdir(save)) == ['checkpoint', 'ckpt-1.data-00000-of-00001', 'ckpt-1.index',
                                            'ckpt-2.data-00000-of-00001', 'ckpt-2.index', 'config.json',
                                            'tensorboard', 'test_bpd_npz.npz']
        assert tf.train.latest_checkpoint(save) == os.path.join(save, 'ckpt-2')
        import pixel_cnn_pp
        from pixel_cnn_pp import checkpoints
        assert checkpoints.run_checkpoints(save) == [os.path.join(save, 'ckpt-2'), os.path.join(save, 'ckpt-1')]
        assert pixel_cnn_pp.load(save).checkpoint_path == os.path.join(save, 'ckpt-2')
        assert tf.train.load_checkpoint(os.path.join(save, 'ckpt-2')).get_tensor(
            'adam/step/.ATTRIBUTES/VARIABLE_VALUE') == 2

        config = open(os.path.join(save, 'config.json')).read()
        with open(os.path.join(disk, 'filler'), 'wb', buffering=0) as f:  # the rest of the disk
            with contextlib.suppress(OSError):
                while True:
                    f.write(b'\0' * 4096)
        out = train_script('--save_dir=' + save, '--load_params', '--max_epochs=1')
        assert out.returncode == 3, out.stderr
        assert out.stderr.splitlines() == ['train.py: error: cannot write %s/lock (No space left on device); the run '
                                           'stopped, its latest checkpoint is %s/ckpt-2' % (save, save)], out.stderr
        assert open(os.path.join(save, 'config.json')).read() == config
        assert tf.train.latest_checkpoint(save) == os.path.join(save, 'ckpt-2')
        assert not [p for p in os.listdir(save) if 'tmp' in p or p.endswith('_temp') or p == 'lock']

        for name in ['filler'] + [p for p in os.listdir(save) if p.startswith('ckpt-1.')]:  # the user frees space
            os.remove(os.path.join(disk, name) if name == 'filler' else os.path.join(save, name))
        out = train_script('--save_dir=' + save, '--load_params', '--max_epochs=1', '--save_steps=0')
        assert out.returncode == 0, out.stderr
        assert 'restoring parameters from %s/ckpt-2' % save in out.stdout
        assert tf.train.latest_checkpoint(save) == os.path.join(save, 'ckpt-12')
