"""The run folder (pixel_cnn_pp.savedir): one run at a time, the history, what a kill leaves
behind and what a failed first run created. (Through train.py: test_train_cli.py; a real
kill, signal or full disk: test_run.py.)"""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from pixel_cnn_pp import files, savedir
from pixel_cnn_pp.config import ConfigError


def dead_pid():
    """The pid of a process that has ended."""
    return int(subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                              capture_output=True, text=True, check=True).stdout)


def write_lock(folder, **owner):
    with open(os.path.join(folder, savedir.LOCK_FILE), 'w') as f:
        json.dump(owner, f)


def test_a_held_lock_refuses_a_second_run_naming_its_owner(tmp_path):
    held = savedir.Lock(str(tmp_path))
    held.acquire()
    owner = json.load(open(tmp_path / 'lock'))
    assert owner['pid'] == os.getpid() and owner['host'] == socket.gethostname()
    with pytest.raises(savedir.InUse, match='save_dir=%s is in use by another run .pid %d on %s, started '
                       % (re.escape(str(tmp_path)), os.getpid(), re.escape(socket.gethostname()))) as e:
        savedir.Lock(str(tmp_path)).acquire()  # another open file: flock refuses it
    assert isinstance(e.value, ConfigError) and e.value.fields == ('save_dir',)
    held.release()
    assert not os.path.exists(tmp_path / 'lock')
    again = savedir.Lock(str(tmp_path))
    again.acquire()  # free again
    again.release()


def test_a_stale_lock_of_this_host_is_taken_over(tmp_path, capsys):
    pid = dead_pid()
    write_lock(tmp_path, pid=pid, host=socket.gethostname(), started='earlier')
    lock = savedir.Lock(str(tmp_path))
    lock.acquire()
    assert ('warning: taking over the stale lock of pid %d on %s, started earlier, which is no longer running'
            % (pid, socket.gethostname())) in capsys.readouterr().out
    assert json.load(open(tmp_path / 'lock'))['pid'] == os.getpid()
    lock.release()


def test_the_lock_file_of_another_host_is_refused_and_kept(tmp_path):
    write_lock(tmp_path, pid=1, host='elsewhere', started='earlier')
    with pytest.raises(savedir.InUse, match='holds the lock file of a run on host elsewhere .pid 1 on elsewhere, '
                                            'started earlier.; if that run has ended, delete .*lock'):
        savedir.Lock(str(tmp_path)).acquire()
    assert json.load(open(tmp_path / 'lock')) == dict(pid=1, host='elsewhere', started='earlier')


def test_history_drops_epochs_no_checkpoint_counts_and_pads_missing_ones(tmp_path, capsys):
    path = str(tmp_path / 'history.npz')
    assert savedir.read_history(path, 0) == []
    savedir.write_history(path, [3.5, 3.25, 3.125], train_bpd=np.arange(6.))
    assert savedir.read_history(path, 2) == [3.5, 3.25]  # a kill between history and checkpoint
    assert np.load(path)['train_bpd'].tolist() == [0., 1., 2., 3., 4., 5.]  # kept alongside
    padded = savedir.read_history(path, 5)
    assert padded[:3] == [3.5, 3.25, 3.125] and np.isnan(padded[3:]).all()
    assert 'holds the test bits/dim of 3 epochs, the checkpoint 5; the others are NaN' in capsys.readouterr().out


def test_leftovers_of_a_kill_are_removed_and_nothing_else(tmp_path):
    for name in ('config.json.tmp', 'test_bpd_npz.npz.tmp123', 'ckpt-3.index', 'checkpoint', 'notes.txt'):
        open(tmp_path / name, 'w').close()
    os.makedirs(tmp_path / 'ckpt-4_temp' / 'part')
    os.makedirs(tmp_path / 'tensorboard')
    savedir.remove_leftovers(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ['checkpoint', 'ckpt-3.index', 'notes.txt', 'tensorboard']


def test_failed_run_removes_only_what_it_created(tmp_path):
    """As run.py uses files.Created on a save_dir (deep=False: new names at its top)."""
    os.makedirs(tmp_path / 'mine' / 'old')
    open(tmp_path / 'mine' / 'notes.txt', 'w').close()
    created = files.Created(str(tmp_path / 'mine'))
    os.makedirs(tmp_path / 'mine' / 'tensorboard')
    open(tmp_path / 'mine' / 'config.json', 'w').close()
    created.remove()
    assert sorted(os.listdir(tmp_path / 'mine')) == ['notes.txt', 'old']
    fresh = files.Created(str(tmp_path / 'new'))
    os.makedirs(tmp_path / 'new' / 'tensorboard')
    fresh.remove()
    assert not os.path.exists(tmp_path / 'new')  # a folder the run made goes entirely
