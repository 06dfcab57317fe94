"""Data sets: the official CIFAR-10 layout (read without running code), tensorflow-datasets
(mocked), your own .npz and its labels, input mutation."""

import os
import pickle
import re
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from pixel_cnn_pp import cli, data as data_lib
from pixel_cnn_pp import datafiles, tfds_sets, training
from pixel_cnn_pp.config import ConfigError
from pixel_cnn_pp.datafiles import DataError
from pixel_cnn_pp.images import scale
from conftest import ROOT, project_files

from conftest import write_cifar_layout


@pytest.mark.parametrize('where, protocol', [('', 2), ('cifar-10-python', 5),
                                             ('cifar-10-python/cifar-10-batches-py', 4)])
def test_official_cifar_layout(tmp_path, where, protocol):
    """The official download layout, the folder the python tarball unpacks to, or the batch
    files themselves; pickles of protocol 2 (bytes through _codecs.encode, as Python 3 writes
    the Python 2 format), 4 and 5 (numpy's _frombuffer) all read by the restricted unpickler."""
    images = write_cifar_layout(str(tmp_path), protocol=protocol)
    d = data_lib.load('cifar', os.path.join(str(tmp_path), where), class_conditional=True)
    assert d.train_x.shape == (35, 32, 32, 3) and d.test_x.shape == (7, 32, 32, 3)  # N from the files
    np.testing.assert_array_equal(d.train_x[7:14], images['data_batch_2'][0])
    np.testing.assert_array_equal(d.test_y, images['test_batch'][1])
    assert d.num_labels == 10


def test_cifar_through_tensorflow_datasets(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        d = data_lib.load('cifar', str(tmp_path), class_conditional=True)
    assert d.train_x.shape == (6, 32, 32, 3) and d.train_x.dtype == np.uint8
    assert d.train_y.shape == (6,) and d.num_labels == 10


def test_npz_and_checks(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / 'gray.npz', train_x=rng.integers(0, 256, (5, 8, 12, 1), dtype=np.uint8),
             test_x=rng.integers(0, 256, (2, 8, 12, 1), dtype=np.uint8))
    d = data_lib.load('npz', str(tmp_path / 'gray.npz'))
    assert d.train_x.shape == (5, 8, 12, 1) and d.num_labels == 0 and d.train_y is None
    with pytest.raises(DataError) as e:
        data_lib.load('npz', str(tmp_path / 'gray.npz'), class_conditional=True)
    assert e.value.field == 'class_conditional' and e.value.values == {'class_conditional': True, 'data_set': 'npz'}
    assert str(e.value) == 'class_conditional needs labels: data_set=npz has none'
    np.savez(tmp_path / 'float.npz', train_x=np.zeros((2, 8, 8, 3)), test_x=np.zeros((2, 8, 8, 3)))
    with pytest.raises(DataError, match='must be uint8') as e:
        data_lib.load('npz', str(tmp_path / 'float.npz'))
    assert e.value.field == 'data_set'
    with pytest.raises(ConfigError) as e:
        data_lib.load('mnist', str(tmp_path))
    assert e.value.field == 'data_set' and 'is not one of cifar, imagenet, npz, folder, or tfds:NAME' in str(e.value)


def test_constant_images_get_a_warning(capsys):
    gray = np.full((8, 8, 8, 3), 128, np.uint8)
    data_lib.check(data_lib.Data(gray, None, gray, None, 0), 'npz', False)
    assert 'warning: the npz training images are (nearly) constant (values 128..128)' in capsys.readouterr().out
    noise = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    data_lib.check(data_lib.Data(noise, None, noise, None, 0), 'npz', False)
    assert capsys.readouterr().out == ''


def test_batches_are_gathered_from_the_one_array(tmp_path):
    """Batches are the data set's images in epoch_order, served from a memory-mapped file as
    from memory; the tf.data graph holds indices only, not a copy of the images (a copy would
    double the memory of ImageNet-size data and cannot be serialised past 2 GB)."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / 'x.npy', x)
    mapped = np.load(tmp_path / 'x.npy', mmap_mode='r')
    y = rng.integers(0, 10, 64).astype(np.int32)
    strategy = tf.distribute.get_strategy()
    data = data_lib.Data(mapped, y, mapped[:5], y[:5], 10)
    order = training.epoch_order(64, 9, 1)
    batches = list(data_lib.train_batches(strategy, data, 16, seed=9, epoch=1))
    assert len(batches) == 4
    for k, (images, labels, weight) in enumerate(batches):
        idx = order[16 * k:16 * (k + 1)]
        np.testing.assert_array_equal(images.numpy(), scale(x[idx]).numpy())
        np.testing.assert_array_equal(labels.numpy(), y[idx])
        np.testing.assert_array_equal(weight.numpy(), np.ones(16))
    test = list(data_lib.test_batches(strategy, data, 4))
    assert [b[2].numpy().tolist() for b in test] == [[1.] * 4, [1., 0., 0., 0.]]
    big = rng.integers(0, 256, (4000, 16, 16, 3), dtype=np.uint8)
    ds = data_lib._pipeline(big, None, np.arange(4000).reshape(-1, 16), 1, 16)
    graph = ds._as_serialized_graph(external_state_policy=tf.data.experimental.ExternalStatePolicy.IGNORE)
    assert len(graph.numpy()) < big.nbytes / 20


def test_batches_run_without_the_autotuner(two_replicas):
    """The batches come from one pipeline of ours per worker, with tf.data's autotuner off:
    deleting an iterator the autotuner tunes (as tf.distribute's per-device input iterators
    are) waits until its period is over, up to a minute at the end of every epoch. Each
    replica gets its columns of the global batch, as a PerReplica value."""
    data = data_lib.Data(np.arange(8 * 48, dtype=np.uint8).reshape(8, 4, 4, 3), None,
                         np.zeros((1, 4, 4, 3), np.uint8), None, 0)
    assert data_lib._pipeline(data.train_x, None, np.arange(8).reshape(2, 4), 2, 2).options().autotune.enabled is False
    batches = data_lib.train_batches(two_replicas, data, 2, seed=1, epoch=0)
    assert len(batches) == 2 and (batches.first, batches.local) == (0, 2)
    order = training.epoch_order(8, 1, 0)
    for step, (x, _, weight) in enumerate(batches):
        for r, (images, w) in enumerate(zip(x.values, weight.values)):
            np.testing.assert_array_equal(images.numpy(), scale(data.train_x[order[4 * step + 2 * r:][:2]]).numpy())
            np.testing.assert_array_equal(w.numpy(), [1., 1.])


class SecondWorker:
    """What Batches asks of a strategy, as worker 1 of two with two replicas each sees it
    (MultiWorkerMirroredStrategy: replicas 2 and 3 of 4)."""
    num_replicas_in_sync = 4

    def experimental_distribute_values_from_function(self, fn):
        return tuple(fn(tf.distribute.experimental.ValueContext(r, 4)) for r in (2, 3))

    def experimental_local_results(self, value):
        return value


def test_a_worker_takes_its_replicas_columns():
    """Worker 1 gathers columns 2B..4B of each global batch, replica 2 the first B of them."""
    x = np.arange(16 * 3, dtype=np.uint8).reshape(16, 1, 1, 3).repeat(4, 1).repeat(4, 2)
    data = data_lib.Data(x, np.arange(16), x[:1], np.zeros(1), 16)
    batches = data_lib.train_batches(SecondWorker(), data, 2, seed=3, epoch=0)
    assert (batches.first, batches.local, len(batches)) == (2, 2, 2)
    order = training.epoch_order(16, 3, 0).reshape(2, 8)
    for step, per_replica in enumerate(batches):
        for r, (images, labels, _) in zip((2, 3), per_replica):
            np.testing.assert_array_equal(labels.numpy(), order[step, 2 * r:2 * r + 2])
            np.testing.assert_array_equal(images.numpy(), scale(x[order[step, 2 * r:2 * r + 2]]).numpy())


def test_mutation_rate_measured_on_a_batch():
    x = scale(np.full((64, 16, 16, 3), 100, np.uint8))
    seed = tf.constant([3, 4], tf.int64)
    mutated = training.mutate(x, 0.1, seed).numpy()
    changed = np.mean(mutated != x.numpy())
    # 49,152 sub-pixels: 0.1 x (1 - 1/256) change value, give or take 4 standard deviations
    expected = 0.1 * 255 / 256
    assert abs(changed - expected) < 4 * np.sqrt(expected * (1 - expected) / x.numpy().size)
    values = np.rint(mutated * 127.5 + 127.5)
    np.testing.assert_allclose(mutated, (values - 127.5) / 127.5, atol=1e-6)  # on the 8-bit grid
    assert len(np.unique(values)) > 200  # uniform over 0..255
    np.testing.assert_array_equal(training.mutate(x, 0.1, seed), mutated)  # same seed, same mutation
    np.testing.assert_array_equal(training.mutate(x, 0., seed), x)


class CreatesAFile:
    """What a hostile pickle holds: unpickling it opens (creates) the file `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, 'w')


def write_hostile_batch(path, marker, protocol=2):
    """A batch whose data, if unpickled with pickle.load, creates the file marker."""
    with open(path, 'wb') as f:
        pickle.dump({'data': CreatesAFile(str(marker)), 'labels': [0]}, f, protocol=protocol)


@pytest.mark.parametrize('protocol', [2, 5])
def test_a_cifar_batch_cannot_run_code(tmp_path, protocol):
    write_cifar_layout(str(tmp_path))
    batch = tmp_path / 'cifar-10-python' / 'cifar-10-batches-py' / 'data_batch_3'
    marker = tmp_path / 'created'
    write_hostile_batch(batch, marker, protocol)
    with pytest.raises(DataError, match='data_batch_3: refused to unpickle it .it asks for (builtins|io).open.'):
        data_lib.load('cifar', str(tmp_path))
    assert not marker.exists()
    with open(batch, 'rb') as f:  # the file is a real attack: plain pickle runs it
        pickle.load(f, encoding='latin1').get('data').close()
    assert marker.exists()


@pytest.mark.parametrize('content, message', [
    (pickle.dumps({'data': np.array([{}], object)}), 'refused to unpickle it .an object array'),
    (pickle.dumps({'data': np.zeros(3)})[:-9], 'not a readable pickle'),
    (pickle.dumps(np.zeros((2, 3072), np.uint8)), r'expected a CIFAR-10 batch with data of uint8 \(N, 3072\), got NoneType'),
    (pickle.dumps({'data': np.zeros((2, 3072), np.uint8), 'labels': [0, 10]}), r'expected 2 labels in 0\.\.9'),
])
def test_cifar_batch_errors(tmp_path, content, message):
    (tmp_path / 'data_batch_1').write_bytes(content)
    with pytest.raises(DataError, match='data_batch_1: ' + message):
        data_lib._read_cifar_batch(str(tmp_path / 'data_batch_1'))


def test_load_pickle_reads_what_the_batches_hold(tmp_path):
    """Dicts, lists, tuples, str/bytes, numbers, arrays of any non-object dtype, any protocol."""
    value = {'a': [1, 2.5, 'x', b'\x00\xff', (None, True)], b'k': np.arange(6, dtype=np.float32).reshape(2, 3),
             'u8': np.arange(256, dtype=np.uint8), 'big': np.zeros((2, 2), '>i8'), 'scalar': np.int64(7)}
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        (tmp_path / 'p').write_bytes(pickle.dumps(value, protocol=protocol))
        got = datafiles.load_pickle(str(tmp_path / 'p'))
        plain = pickle.loads((tmp_path / 'p').read_bytes(), encoding='latin1')  # the reference
        assert got['a'] == value['a'] == plain['a'] and got['scalar'] == 7
        for k in (b'k', 'u8', 'big'):
            assert got[k].dtype == plain[k].dtype
            np.testing.assert_array_equal(got[k], value[k])


def _npz(path, train_y, test_y, n_test=None):
    n_test = len(test_y) if n_test is None else n_test
    x = np.random.default_rng(0).integers(0, 256, (len(train_y) + n_test, 4, 4, 3), dtype=np.uint8)
    np.savez(path, train_x=x[:len(train_y)], test_x=x[len(train_y):], train_y=np.asarray(train_y),
             test_y=np.asarray(test_y))
    return str(path)


def test_labels_are_the_classes_0_to_k_minus_1(tmp_path):
    d = data_lib.load('npz', _npz(tmp_path / 'ok.npz', [2, 0, 1, 1], [1, 0]), class_conditional=True)
    assert d.num_labels == 3 and d.train_y.dtype == np.int32
    np.testing.assert_array_equal(d.test_y, [1, 0])
    with pytest.raises(DataError, match=r'the largest label of train_y is 1000000 and only 4 of the 1000001 '
                                        r'values 0\.\.1000000 occur'):
        data_lib.load('npz', _npz(tmp_path / 'million.npz', [0, 1, 2, 1000000], [0]))
    with pytest.raises(DataError, match=r'the largest label of train_y is 2 and only 2 of the 3 values'):
        data_lib.load('npz', _npz(tmp_path / 'gap.npz', [0, 2, 2], [0]))
    with pytest.raises(DataError, match=r'^data_set=npz: its test labels 3, 7 are not classes of the training set '
                                        r'\(0\.\.2\)') as e:
        data_lib.load('npz', _npz(tmp_path / 'test.npz', [0, 1, 2], [7, 0, 3, 3]))
    assert e.value.field == 'data_set'
    with pytest.raises(DataError, match=r'train_y must be 3 integer labels >= 0 .*int64 \(3,\) with negatives'):
        data_lib.load('npz', _npz(tmp_path / 'neg.npz', [0, -1, 1], [0]))
    with pytest.raises(DataError, match=r'test_y must be 1 integer labels >= 0 .*float64'):
        data_lib.load('npz', _npz(tmp_path / 'float.npz', [0, 1], [0.5]))
    labels = np.arange(10)
    data = data_lib.Data(np.zeros((10, 4, 4, 3), np.uint8), labels, np.zeros((1, 4, 4, 3), np.uint8),
                         np.array([10]), 10)
    with pytest.raises(DataError, match=r'cifar: its test labels 10 are not classes of the training set \(0\.\.9\)'):
        data_lib.check(data, 'cifar', True)


def test_tfds_failures(tmp_path):
    """A missing module is said to be one, a failed download is one, a bug is not caught."""
    not_prepared = mock.patch.object(tfds, 'load', side_effect=AssertionError('not prepared'))
    answers = mock.patch.object(tfds_sets, 'reachable', return_value=None)
    with not_prepared, answers, mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare',
                                                  side_effect=ModuleNotFoundError('no', name='importlib_resources')):
        with pytest.raises(DataError, match="^tensorflow-datasets needs the Python module 'importlib_resources', "
                                            "which is not installed: a missing dependency"):
            data_lib.load('cifar', str(tmp_path / 'd'))
    with not_prepared, answers, mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare',
                                                  side_effect=tfds.download.DownloadError('503 Service Unavailable')):
        with pytest.raises(DataError, match=r'^tensorflow-datasets could not download cifar10 into data_dir=\S+ '
                                            r'\(503 Service Unavailable\); use local data instead'):
            data_lib.load('cifar', str(tmp_path / 'd'))
    with mock.patch.object(tfds, 'load', side_effect=AttributeError('a bug')):
        with pytest.raises(AttributeError, match='a bug'):
            data_lib.load('cifar', str(tmp_path / 'd'))
    with mock.patch.object(tfds_sets, 'reachable', return_value='Name or service not known'):
        with pytest.raises(DataError, match=r'^cifar10 is not in data_dir=\S+ and cannot be downloaded .*'
                                            r'Name or service not known\); use local data instead: put the CIFAR-10 '
                                            r'python version .* in data_dir, or pass your own images as '
                                            r'data_set=folder data_dir=DIR \(or data_set=npz data_dir=FILE.npz\)$') as e:
            data_lib.load('cifar', str(tmp_path / 'd'))
    assert e.value.fields == ('data_dir', 'data_set') and e.value.values['data_dir'] == str(tmp_path / 'd')
    with mock.patch.object(cli, 'FLAGS', {'data_dir': None, 'data_set': None}):  # train.py's flags
        assert cli.flag_message(e.value).endswith('in --data_dir, or pass your own images as --data_set=folder '
                                                  '--data_dir=DIR (or --data_set=npz --data_dir=FILE.npz)')
    assert os.listdir(tmp_path) == []


def test_no_other_way_to_unpickle():
    """np.load is never allowed pickles (it then refuses object arrays), and no pickle read
    in the project's code but through datafiles.load_pickle (tests may: they show attacks;
    benchmarks/unpickle.py times plain pickle on the files it writes)."""
    offenders = []
    paths = project_files('.py')
    assert 'pixel_cnn_pp/datafiles.py' in paths and 'train.py' in paths
    for path in paths:
        text = open(os.path.join(ROOT, path)).read()
        reads = re.search(r'pickle\.(loads?|Unpickler)\b', text) and path != 'pixel_cnn_pp/datafiles.py'
        if 'allow_pickle=' + 'True' in text or (reads and not path.startswith('tests') and
                                                     path != os.path.join('benchmarks', 'unpickle.py')):
            offenders.append(path)
    assert offenders == []
