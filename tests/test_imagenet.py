"""Downsampled ImageNet from the files people have: the original's PNG archives and folders,
Imagenet32's npz and pickle batches, and the cache (reuse, rebuild, a kill mid-conversion)."""

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from pixel_cnn_pp import datafiles, imagenet
from pixel_cnn_pp.datafiles import DataError

from conftest import ROOT, write_imagenet32, write_original  # noqa: E402


def assert_same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_nothing_found(tmp_path):
    assert imagenet.find(str(tmp_path)) is None
    assert imagenet.find(str(tmp_path / 'absent')) is None
    (tmp_path / 'train_32x32.tar').write_bytes(b'')  # half of a form is not a form
    assert imagenet.find(str(tmp_path)) is None
    with pytest.raises(DataError, match='^data_set=imagenet: nothing in data_dir=') as e:
        imagenet.load(str(tmp_path))
    assert e.value.field == 'data_dir' and e.value.values['data_dir'] == str(tmp_path)
    for words in ('train_32x32.tar', 'valid_32x32.tar', 'train_data_batch_1', 'val_data',
                  'Imagenet32_train_npz.zip'):
        assert words in imagenet.MISSING and words in str(e.value)
    assert str(e.value).endswith('in data_dir or a folder in it. Images of your own: data_set=folder data_dir=DIR.')


@pytest.mark.parametrize('form,where', [('tar', ''), ('folders', ''), ('tar', 'imagenet')])
def test_original(tmp_path, capsys, form, where):
    """Pixels as written, in sorted file-name order, whatever order the archive stores them in."""
    train, test = write_original(str(tmp_path / where), form=form)
    assert 'original downsampled ImageNet' in imagenet.find(str(tmp_path))
    train_x, train_y, test_x, test_y, num_labels = imagenet.load(str(tmp_path), progress=False)
    assert_same(train_x, train)
    assert_same(test_x, test)
    assert train_y is None and test_y is None and num_labels == 0
    assert isinstance(train_x, np.memmap) and os.path.isdir(tmp_path / imagenet.CACHE)
    out = capsys.readouterr().out
    assert 'converting it into the cache' in out and 'converted 24 training and 8 test images' in out


def test_original_prefers_archive_to_folder(tmp_path):
    train, test = write_original(str(tmp_path), form='tar')
    os.makedirs(tmp_path / 'train_32x32')  # an extraction that has just begun
    os.makedirs(tmp_path / 'valid_32x32')
    assert_same(imagenet.load(str(tmp_path), progress=False)[0], train)


def test_original_grayscale_and_wrong_images(tmp_path):
    """Grayscale is repeated to RGB; a PNG of another size, a file that is no PNG or a broken
    PNG is an error naming it, and leaves no cache."""
    gray = np.arange(1024, dtype=np.uint8).reshape(32, 32, 1)
    for case, png, error in [('gray', tf.io.encode_png(gray).numpy(), None),
                             ('size', tf.io.encode_png(np.zeros((64, 32, 3), np.uint8)).numpy(), 'is 32x64'),
                             ('gif', b'GIF89a' + bytes(100), 'is not a PNG'),
                             ('cut', tf.io.encode_png(gray).numpy()[:-20], 'is a broken PNG')]:
        root = tmp_path / case
        train, test = write_original(str(root), form='folders')
        (root / 'valid_32x32' / '9999999.png').write_bytes(png)
        if error is None:
            assert_same(imagenet.load(str(root), progress=False)[2],
                        np.concatenate([test, np.repeat(gray, 3, -1)[None]]))
            continue
        with pytest.raises(ValueError, match='valid_32x32: 9999999.png ' + error):
            imagenet.load(str(root), progress=False)
        assert not os.path.exists(root / imagenet.CACHE) and not os.path.exists(root / (imagenet.CACHE + '.partial'))


@pytest.mark.parametrize('form,train_dir,test_dir', [
    ('npz', '', ''), ('pickle', '', ''), ('npz', 'Imagenet32_train_npz', 'Imagenet32_val_npz'),
    ('pickle', 'Imagenet32_train', 'Imagenet32_val')])
def test_imagenet32(tmp_path, capsys, form, train_dir, test_dir):
    """Channel-first rows to NHWC, labels 1..1000 to 0..999, the batches in order."""
    want = write_imagenet32(str(tmp_path), form=form, train_dir=train_dir, test_dir=test_dir)
    assert 'Imagenet32' in imagenet.find(str(tmp_path))
    got = imagenet.load(str(tmp_path), progress=False)
    for g, w in zip(got, want):
        assert_same(g, w)
    assert got[-1] == 1000
    assert want[1].min() == 0 and want[1].max() == 999
    # independently of the fixture's transposition: row 0 of the file is R of pixels (0, 0),
    # (0, 1), ..., then G from index 1024, B from 2048; row-major within each plane
    path = os.path.join(str(tmp_path), train_dir, 'train_data_batch_1' + ('.npz' if form == 'npz' else ''))
    if form == 'npz':
        with np.load(path) as f:
            row = f['data'][0]
    else:
        row = datafiles.load_pickle(path)['data'][0]
    assert got[0][0, 0, 1, 0] == row[1] and got[0][0, 1, 0, 1] == row[1024 + 32] and got[0][0, 2, 3, 2] == row[2048 + 67]
    assert '2 of the 10 training batches' in capsys.readouterr().out


def test_imagenet32_consecutive_batches_only(tmp_path):
    """Batches 1..k that follow on from each other: a lone batch 4 is not used."""
    want = write_imagenet32(str(tmp_path), train_sizes=(5, 6))
    write_imagenet32(str(tmp_path / 'other'), train_sizes=(2, 2, 2, 9))
    os.rename(tmp_path / 'other' / 'train_data_batch_4.npz', tmp_path / 'train_data_batch_4.npz')
    assert_same(imagenet.load(str(tmp_path), progress=False)[0], want[0])


@pytest.mark.parametrize('bad,message', [
    (dict(labels=[0, 5]), r'expected 2 labels in 1\.\.1000, got int64 \(2,\) in 0\.\.5'),
    (dict(data=np.zeros((2, 3 * 64 * 64), np.uint8)), r'expected data of uint8 \(N, 3072\)'),
    (dict(), 'not a readable Imagenet32 batch')])
def test_imagenet32_wrong_batches(tmp_path, bad, message):
    write_imagenet32(str(tmp_path))
    if bad:
        np.savez(tmp_path / 'val_data.npz', **dict(dict(data=np.zeros((2, 3072), np.uint8), labels=[1, 2]), **bad))
    else:
        (tmp_path / 'val_data.npz').write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(DataError, match='val_data.npz: ' + message):
        imagenet.load(str(tmp_path), progress=False)


def test_cache_is_reused(tmp_path, capsys):
    want = write_imagenet32(str(tmp_path))
    imagenet.load(str(tmp_path), progress=False)
    manifest = tmp_path / imagenet.CACHE / imagenet.MANIFEST
    before = os.stat(manifest).st_mtime_ns
    capsys.readouterr()
    got = imagenet.load(str(tmp_path), progress=False)
    out = capsys.readouterr().out
    assert 'convert' not in out and 'rebuild' not in out and imagenet.CACHE in out
    assert os.stat(manifest).st_mtime_ns == before
    assert all(isinstance(a, np.memmap) and not a.flags.writeable for a in got[:4])
    for g, w in zip(got, want):
        assert_same(g, w)
    # moving the whole data_dir keeps the cache valid: the source is recorded relative to it
    os.rename(tmp_path, str(tmp_path) + '_moved')
    imagenet.load(str(tmp_path) + '_moved', progress=False)
    assert 'convert' not in capsys.readouterr().out


def _truncate(cache):
    with open(os.path.join(cache, 'train_x.npy'), 'r+b') as f:
        f.truncate(os.path.getsize(f.name) - 100)


def _pad(cache):
    with open(os.path.join(cache, 'test_y.npy'), 'ab') as f:
        f.write(b'\0' * 4)


def _bad_manifest(cache):
    with open(os.path.join(cache, imagenet.MANIFEST), 'r+') as f:
        f.truncate(20)


def _wrong_shape(cache):
    path = os.path.join(cache, imagenet.MANIFEST)
    with open(path) as f:
        manifest = json.load(f)
    manifest['arrays']['train_y']['shape'] = [1]
    with open(path, 'w') as f:
        json.dump(manifest, f)


@pytest.mark.parametrize('damage,why', [
    (_truncate, 'train_x.npy is truncated'), (_pad, 'test_y.npy has 160 bytes, not the 156'),
    (lambda cache: os.remove(os.path.join(cache, 'test_x.npy')), 'test_x.npy is missing'),
    (lambda cache: os.remove(os.path.join(cache, imagenet.MANIFEST)), 'it has no manifest.json'),
    (_bad_manifest, 'its manifest.json is unreadable'), (_wrong_shape, r'train_y.npy is int32 \(22,\), not int32 \[1\]'),
    ('source', 'it was made from other files')])
def test_cache_rebuilt(tmp_path, capsys, damage, why):
    """A damaged cache, or one of other files, is rebuilt, saying why, and never used."""
    want = write_imagenet32(str(tmp_path))
    imagenet.load(str(tmp_path), progress=False)
    if damage == 'source':  # new files: a different number of test images
        want = write_imagenet32(str(tmp_path), n_test=5, seed=1)
    else:
        damage(str(tmp_path / imagenet.CACHE))
    capsys.readouterr()
    got = imagenet.load(str(tmp_path), progress=False)
    assert re.match('rebuilding the cache, as ' + why, capsys.readouterr().out.splitlines()[1])
    for g, w in zip(got, want):
        assert_same(g, w)
    imagenet.load(str(tmp_path), progress=False)
    assert 'rebuild' not in capsys.readouterr().out


def test_cache_rebuilt_after_a_png_changes(tmp_path, capsys):
    """In an extracted folder, one PNG rewritten in place is enough."""
    train, test = write_original(str(tmp_path), form='folders')
    imagenet.load(str(tmp_path), progress=False)
    path = str(tmp_path / 'valid_32x32' / sorted(os.listdir(tmp_path / 'valid_32x32'))[0])
    tf.io.write_file(path, tf.io.encode_png(255 - test[0]))
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10 ** 9))  # past a coarse clock's tick
    capsys.readouterr()
    got = imagenet.load(str(tmp_path), progress=False)
    assert 'rebuilding the cache, as it was made from other files' in capsys.readouterr().out
    assert_same(got[2], np.concatenate([255 - test[:1], test[1:]]))


KILLED = """
import sys, time
from pixel_cnn_pp import datafiles, imagenet
from pixel_cnn_pp.datafiles import DataError
read = imagenet._read_batch
def slow(path):
    if 'batch_2' in path:
        print('batch 1 written', flush=True)
        time.sleep(600)
    return read(path)
imagenet._read_batch = slow
imagenet.load(sys.argv[1], progress=False)
"""


def test_kill_mid_conversion(tmp_path, capsys):
    """SIGKILL halfway through the conversion leaves no cache; the next run removes what the
    killed one left and converts afresh."""
    want = write_imagenet32(str(tmp_path))
    p = subprocess.Popen([sys.executable, '-c', KILLED, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3'))
    try:
        for line in p.stdout:
            if line.startswith('batch 1 written'):
                break
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not os.path.exists(tmp_path / imagenet.CACHE)
    assert os.path.exists(tmp_path / (imagenet.CACHE + '.partial') / 'train_x.npy')
    got = imagenet.load(str(tmp_path), progress=False)
    assert 'after an interrupted conversion' in capsys.readouterr().out
    for g, w in zip(got, want):
        assert_same(g, w)
    assert not os.path.exists(tmp_path / (imagenet.CACHE + '.partial'))


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    """An exception (or Ctrl-C) mid-way removes the partial conversion and keeps an old cache
    out of use."""
    write_imagenet32(str(tmp_path))
    imagenet.load(str(tmp_path), progress=False)
    write_imagenet32(str(tmp_path), n_test=5, seed=1)
    read = imagenet._read_batch

    def interrupted(path):
        if 'batch_2' in path:
            raise KeyboardInterrupt
        return read(path)
    monkeypatch.setattr(imagenet, '_read_batch', interrupted)
    with pytest.raises(KeyboardInterrupt):
        imagenet.load(str(tmp_path), progress=False)
    assert sorted(os.listdir(tmp_path / imagenet.CACHE)) == ['manifest.json', 'test_x.npy', 'test_y.npy',
                                                             'train_x.npy', 'train_y.npy']
    assert not os.path.exists(tmp_path / (imagenet.CACHE + '.partial'))
    monkeypatch.setattr(imagenet, '_read_batch', read)
    assert len(imagenet.load(str(tmp_path), progress=False)[2]) == 5


def test_one_conversion_at_a_time(tmp_path, capsys):
    """A run that finds another converting waits for it, then reads its cache."""
    want = write_imagenet32(str(tmp_path))
    cache = str(tmp_path / imagenet.CACHE)
    lock = os.open(cache + '.lock', os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)  # as the other process
    got = []
    waiting = threading.Thread(target=lambda: got.extend(imagenet.load(str(tmp_path), progress=False)))
    waiting.start()
    out = ''
    while 'waiting for another process' not in out:
        assert waiting.is_alive()
        time.sleep(0.05)
        out += capsys.readouterr().out
    src = imagenet._locate(str(tmp_path))
    imagenet._build(cache, src, imagenet._fingerprint(src, str(tmp_path)), False)
    os.close(lock)
    waiting.join(60)
    assert capsys.readouterr().out.count('converted') == 1  # the other process's
    for g, w in zip(got, want):
        assert_same(g, w)


def test_unwritable_data_dir_reads_without_cache(tmp_path, capsys):
    want = write_original(str(tmp_path), form='tar')
    # tests run as root, where permissions do not stop writes: a folder in the lock file's place does
    os.makedirs(tmp_path / (imagenet.CACHE + '.lock'))
    got = imagenet.load(str(tmp_path), progress=False)
    assert 'warning: cannot write the cache' in capsys.readouterr().out
    assert_same(got[0], want[0])
    assert_same(got[2], want[1])
    assert not os.path.exists(tmp_path / imagenet.CACHE)


@pytest.mark.parametrize('protocol', [2, 5])
def test_an_imagenet32_batch_cannot_run_code(tmp_path, protocol):
    from test_data import write_hostile_batch
    write_imagenet32(str(tmp_path), form='pickle')
    marker = tmp_path / 'created'
    write_hostile_batch(tmp_path / 'train_data_batch_2', marker, protocol)
    with pytest.raises(DataError, match='train_data_batch_2: refused to unpickle it .it asks for (builtins|io).open.'):
        imagenet.load(str(tmp_path), progress=False)
    assert not marker.exists() and not os.path.exists(tmp_path / imagenet.CACHE)
