"""Data sets: the official CIFAR-10 layout, tensorflow-datasets (mocked), your own .npz."""

import os
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pixel_cnn_pp import data as data_lib


def write_cifar_layout(root, per_file=7, seed=0):
    """CIFAR-10 python batches: N x 3072 uint8, the R plane then G then B, row-major."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, 'cifar-10-python', 'cifar-10-batches-py')
    os.makedirs(folder)
    images = {}
    for name in ['data_batch_%d' % i for i in range(1, 6)] + ['test_batch']:
        x = rng.integers(0, 256, (per_file, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, per_file).tolist()
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump({'data': x.transpose(0, 3, 1, 2).reshape(per_file, 3072), 'labels': y}, f)
        images[name] = (x, y)
    return images


@pytest.mark.parametrize('where', ['', 'cifar-10-python', 'cifar-10-python/cifar-10-batches-py'])
def test_official_cifar_layout(tmp_path, where):
    """The official download layout, the folder the python tarball unpacks to, or the batch
    files themselves."""
    images = write_cifar_layout(str(tmp_path))
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
    with pytest.raises(ValueError, match='--class_conditional needs labels: npz has none'):
        data_lib.load('npz', str(tmp_path / 'gray.npz'), class_conditional=True)
    np.savez(tmp_path / 'float.npz', train_x=np.zeros((2, 8, 8, 3)), test_x=np.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match='must be uint8'):
        data_lib.load('npz', str(tmp_path / 'float.npz'))
    with pytest.raises(ValueError, match='--data_set must be one of cifar.imagenet.npz'):
        data_lib.load('mnist', str(tmp_path))


def test_scale():
    np.testing.assert_allclose(data_lib.scale(np.array([0, 127, 255], np.uint8)),
                               [-1., -0.5 / 127.5, 1.], rtol=1e-6)


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
    import tensorflow as tf
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / 'x.npy', x)
    mapped = np.load(tmp_path / 'x.npy', mmap_mode='r')
    y = rng.integers(0, 10, 64).astype(np.int32)
    strategy = tf.distribute.get_strategy()
    data = data_lib.Data(mapped, y, mapped[:5], y[:5], 10)
    order = data_lib.epoch_order(64, 9, 1)
    batches = list(data_lib.train_batches(strategy, data, 16, seed=9, epoch=1))
    assert len(batches) == 4
    for k, (images, labels, weight) in enumerate(batches):
        idx = order[16 * k:16 * (k + 1)]
        np.testing.assert_array_equal(images.numpy(), data_lib.scale(x[idx]).numpy())
        np.testing.assert_array_equal(labels.numpy(), y[idx])
        np.testing.assert_array_equal(weight.numpy(), np.ones(16))
    test = list(data_lib.test_batches(strategy, data, 4))
    assert [b[2].numpy().tolist() for b in test] == [[1.] * 4, [1., 0., 0., 0.]]
    big = rng.integers(0, 256, (4000, 16, 16, 3), dtype=np.uint8)
    ds = data_lib._pipeline(big, None, np.arange(4000).reshape(-1, 16), tf.distribute.InputContext(), 16)
    graph = ds._as_serialized_graph(external_state_policy=tf.data.experimental.ExternalStatePolicy.IGNORE)
    assert len(graph.numpy()) < big.nbytes / 20
