"""pixel_cnn_pp.files: the one atomic write (config.json, the history, compress.py's files),
and removing what a failed operation created (Created; a save_dir's: test_savedir.py)."""

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


def test_created_deep_removes_what_appeared_anywhere_inside(tmp_path):
    """deep=True, as a download into a data_dir uses it: new files in folders that existed
    go too (a failed download's temporary files in downloads/), and what existed stays,
    even inside new ones' neighbours."""
    data = tmp_path / 'data'
    os.makedirs(data / 'downloads' / 'old')
    (data / 'downloads' / 'old' / 'a.gz').write_bytes(b'x')
    (data / 'notes.txt').write_text('mine')
    created = files.Created(str(data), deep=True)
    os.makedirs(data / 'downloads' / 'extracted')
    os.makedirs(data / 'mnist' / '3.0.1.incomplete')
    (data / 'downloads' / 'old' / 'b.gz.tmp.123').write_bytes(b'y')
    os.symlink(str(data / 'downloads' / 'old'), str(data / 'link'))
    created.remove()
    assert sorted(os.path.relpath(os.path.join(r, n), data) for r, ds, fs in os.walk(data) for n in ds + fs) == [
        'downloads', os.path.join('downloads', 'old'), os.path.join('downloads', 'old', 'a.gz'), 'notes.txt']


def test_created_removes_the_missing_parents_it_made(tmp_path):
    created = files.Created(str(tmp_path / 'a' / 'b' / 'data'), deep=True)
    os.makedirs(tmp_path / 'a' / 'b' / 'data' / 'mnist')
    created.remove()
    assert os.listdir(tmp_path) == []
    (tmp_path / 'f').write_text('a file where the folder would be')
    files.Created(str(tmp_path / 'f' / 'data')).remove()  # leaves the file alone
    assert os.listdir(tmp_path) == ['f']
