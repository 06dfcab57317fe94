"""pixel_cnn_pp.files: the one atomic write (config.json, the history, compress.py's files)."""

import os

import pytest

from pixel_cnn_pp import config, files, savedir


class Killed(BaseException):
    """What a signal handler's exception looks like to the writer: not an Exception."""


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / 'f.bin')
    files.write_bytes(path, b'old')
    files.write_bytes(path, b'new bytes')
    assert open(path, 'rb').read() == b'new bytes'
    assert os.listdir(tmp_path) == ['f.bin']


@pytest.mark.parametrize('failure', [OSError(28, 'No space left on device'), Killed()])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, failure):
    path = str(tmp_path / 'f.txt')
    files.write_atomically(path, lambda f: f.write('old'), 'w')

    def write(f):
        f.write('half of the new')
        raise failure
    with pytest.raises(type(failure)):
        files.write_atomically(path, write, 'w')
    assert open(path).read() == 'old'
    assert os.listdir(tmp_path) == ['f.txt']


def test_a_killed_first_write_leaves_nothing(tmp_path):
    def write(f):
        f.write(b'part')
        raise Killed()
    with pytest.raises(Killed):
        files.write_atomically(str(tmp_path / 'new.bin'), write)
    assert os.listdir(tmp_path) == []


def test_config_and_history_write_through_it(tmp_path, monkeypatch):
    """config.write and savedir.write_history are atomic writes: a failure in the middle
    leaves the old file (so they go through files.write_atomically)."""
    config.write(str(tmp_path), {'a': 1})
    history = str(tmp_path / 'history.npz')
    savedir.write_history(history, [1.5])
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', full_disk)
    with pytest.raises(OSError):
        config.write(str(tmp_path), {'a': 2})
    with pytest.raises(OSError):
        savedir.write_history(history, [1.5, 2.5])
    monkeypatch.setattr(os, 'fsync', real_fsync)
    assert config.read(str(tmp_path)) == {'a': 1}
    assert savedir.read_history(history, 1) == [1.5]
    assert sorted(os.listdir(tmp_path)) == ['config.json', 'history.npz']
