"""Training and test data as the official data loaders give it (cifar10_data.py,
imagenet_data.py), served through tf.data: uint8 images in memory (or memory-mapped), a
fresh permutation of the training set every epoch from the seed, pixels scaled to [-1, 1]
(images.scale). Data files are read so that they cannot run code (datafiles.load_pickle)."""

import os
import zipfile
import zlib
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import config, imagenet, tfds_sets
from pixel_cnn_pp.datafiles import DataError, first_line, is_npz, load_pickle
from pixel_cnn_pp.config import ConfigError
from pixel_cnn_pp.images import scale

CIFAR_DIR = os.path.join('cifar-10-python', 'cifar-10-batches-py')


class Data(NamedTuple):
    train_x: np.ndarray  # (N, H, W, C) uint8
    train_y: Optional[np.ndarray]  # (N,) int32, or None without labels
    test_x: np.ndarray
    test_y: Optional[np.ndarray]
    num_labels: int  # 0 without labels


def _read_cifar_batch(path):
    """One file of the official CIFAR-10 python layout: N x 3072 uint8 (R, G, B planes)."""
    d = load_pickle(path)
    x = d.get('data') if isinstance(d, dict) else None
    y = d.get('labels') if isinstance(d, dict) else None
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.shape[1:] != (3072,) or x.ndim != 2:
        raise DataError('%s: expected a CIFAR-10 batch with data of uint8 (N, 3072), got %s' % (
            path, '%s %s' % (x.dtype, x.shape) if isinstance(x, np.ndarray) else type(x).__name__))
    y = np.asarray(y if isinstance(y, (list, np.ndarray)) else [])
    if y.shape != (len(x),) or y.dtype.kind not in 'iu' or (y.size and not 0 <= y.min() <= y.max() <= 9):
        raise DataError('%s: expected %d labels in 0..9, got %s %s' % (path, len(x), y.dtype, y.shape))
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y.astype(np.int32)


def cifar_folder(data_dir):
    """The folder of the CIFAR-10 python batches (data_batch_1..5, test_batch) under data_dir:
    cifar-10-python/cifar-10-batches-py (the official code's download), cifar-10-batches-py
    (what the python tarball unpacks to) or data_dir itself; None if there is none."""
    for root in (os.path.join(data_dir, CIFAR_DIR), os.path.join(data_dir, os.path.basename(CIFAR_DIR)),
                 data_dir):
        if os.path.isfile(os.path.join(root, 'data_batch_1')):
            return root
    return None


def read_cifar_split(root, split):
    """(images, labels) of split 'train' (data_batch_1..5) or 'test' (test_batch) of the
    official CIFAR-10 python batches in folder root (see cifar_folder)."""
    names = {'train': ['data_batch_%d' % i for i in range(1, 6)], 'test': ['test_batch']}.get(split)
    if names is None:
        raise DataError('the CIFAR-10 python batches in %s have the splits train and test, not %r'
                        % (root, split))
    batches = [_read_cifar_batch(os.path.join(root, name)) for name in names]
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


# Where else CIFAR-10 comes from when tensorflow-datasets cannot download it.
CIFAR_ROUTE = ('put the CIFAR-10 python version (cifar-10-python.tar.gz from '
               'https://www.cs.toronto.edu/~kriz/cifar.html, unpacked: the folder cifar-10-batches-py) '
               'in data_dir')


def read_tfds(name, splits, data_dir, routes=(), verbose=False):
    """[(images, labels or None) of each split] of tensorflow-datasets' set `name`. cifar10
    is read from the official python batches when data_dir holds them (cifar_folder), as the
    official code reads it; any set otherwise from tensorflow-datasets (tfds_sets.load:
    prepared in data_dir, or downloaded there; `routes`, where else the images can come from,
    are named if it cannot be downloaded; verbose: tensorflow-datasets' progress bars and
    warnings)."""
    root = name == 'cifar10' and data_dir and cifar_folder(data_dir)
    if root:
        return [read_cifar_split(root, split) for split in splits]
    routes = ([CIFAR_ROUTE] if name == 'cifar10' else []) + list(routes)
    return [(a['image'], a.get('label')) for a in tfds_sets.load(name, splits, data_dir, routes, verbose)]


def load_imagenet(data_dir, class_conditional=False, verbose=False):
    """Downsampled ImageNet 32x32 from the files in data_dir (see imagenet.py), else a
    tensorflow-datasets downsampled_imagenet/32x32 prepared there (its download is gone),
    else a DataError naming the forms to get. Asking labels of a form without them is refused
    before anything is converted."""
    if class_conditional and imagenet.find(data_dir) and not imagenet.has_labels(data_dir):
        raise DataError('class_conditional needs labels: the original downsampled ImageNet in '
                        '%s has none (Imagenet32 has 1,000 classes)' % data_dir)
    if not imagenet.find(data_dir):
        splits = tfds_sets.load('downsampled_imagenet/32x32', ['train', 'validation'], data_dir,
                                verbose=verbose, download=False)
        if splits is not None:
            print('ImageNet 32x32: tensorflow-datasets\' downsampled_imagenet/32x32 in', data_dir)
            return Data(splits[0]['image'], None, splits[1]['image'], None, 0)
    return Data(*imagenet.load(data_dir))


def load_npz(path):
    """Your own images: an .npz with train_x, test_x (N, H, W, C) uint8 and optional
    integer train_y, test_y: the classes 0..K-1, every one of them in train_y."""
    if not is_npz(path):
        raise DataError('data_dir=%s is not an .npz (expected an .npz file with train_x and test_x)' % path)
    try:
        with np.load(path, allow_pickle=False) as f:
            d = {k: f[k] for k in f.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:  # truncated
        raise DataError('data_dir=%s is not a readable .npz (%s: %s)'
                        % (path, type(e).__name__, first_line(e))) from None
    for key in ('train_x', 'test_x'):
        if key not in d:
            raise DataError('data_dir=%s: the .npz has no %s (needs train_x and test_x, '
                            'uint8 (N, H, W, C))' % (path, key))
    if not ('train_y' in d and 'test_y' in d):
        return Data(d['train_x'], None, d['test_x'], None, 0)
    for split in ('train', 'test'):
        y, n = d[split + '_y'], len(d[split + '_x'])
        if y.dtype.kind not in 'iu' or y.shape != (n,) or (n and y.min() < 0):
            raise DataError('data_dir=%s: %s_y must be %d integer labels >= 0 (one per image of '
                            '%s_x), got %s %s%s' % (path, split, n, split, y.dtype, y.shape,
                                                    ' with negatives' if y.dtype.kind in 'iu'
                                                    and y.size and y.min() < 0 else ''))
    train_y, test_y = d['train_y'], d['test_y']
    if len(train_y):
        largest = int(train_y.max())
        present = len(np.unique(train_y))
        if present != largest + 1:
            raise DataError('data_dir=%s: the classes are 0..K-1 and each must have training images, '
                            'but the largest label of train_y is %d and only %d of the %d values '
                            '0..%d occur (renumber them, e.g. np.unique(y, return_inverse=True))'
                            % (path, largest, present, largest + 1, largest))
    num_labels = int(train_y.max()) + 1 if len(train_y) else 0
    return Data(d['train_x'], train_y.astype(np.int32), d['test_x'], test_y.astype(np.int32), num_labels)


# Where else a training set comes from (the rest of data.load's forms).
NPZ_ROUTE = 'pass your own images as data_set=npz data_dir=FILE.npz'


def load(data_set, data_dir, class_conditional=False, verbose=False):
    """The Data of data_set from data_dir: cifar reads the official python layout if
    data_dir holds it and otherwise tensorflow-datasets' cifar10 (downloaded into data_dir on
    first use: read_tfds); imagenet reads downsampled ImageNet 32x32 from the files in
    data_dir (load_imagenet); npz reads your own arrays (data_dir is the .npz file). A data
    problem is a DataError naming the argument (data_set, data_dir, class_conditional) or
    file. verbose: tensorflow-datasets' progress bars and warnings."""
    if data_set not in config.DATA_SETS:
        raise DataError('data_set must be one of %s, got %r' % ('|'.join(config.DATA_SETS), data_set))
    if data_set == 'npz':
        if not os.path.isfile(data_dir):
            raise DataError('data_set=npz needs data_dir to be an .npz file; %r is not a file'
                            % data_dir)
        data = load_npz(data_dir)
    elif data_set == 'imagenet':
        data = load_imagenet(data_dir, class_conditional, verbose)
    else:
        (train_x, train_y), (test_x, test_y) = read_tfds('cifar10', ['train', 'test'], data_dir,
                                                         [NPZ_ROUTE], verbose)
        data = Data(train_x, train_y.astype(np.int32), test_x, test_y.astype(np.int32), 10)
    check(data, data_set, class_conditional)
    return data


def check(data, data_set, class_conditional):
    """Refuses (DataError) images PixelCNN++ cannot model, and labels outside the classes
    0..num_labels-1 (a test label the training set does not have, a negative one)."""
    for name, x in (('train', data.train_x), ('test', data.test_x)):
        if x.dtype != np.uint8:
            raise DataError('%s %s images must be uint8, got %s %s' % (data_set, name, x.dtype, x.shape))
        config.check_images(x.shape, '%s %s images' % (data_set, name), error=DataError)
        if len(x) == 0:
            raise DataError('%s has no %s images' % (data_set, name))
    if data.train_x.shape[1:] != data.test_x.shape[1:]:
        raise DataError('%s train images are %s but test images are %s'
                        % (data_set, data.train_x.shape[1:], data.test_x.shape[1:]))
    for name, y in (('train', data.train_y), ('test', data.test_y)):
        if y is None or not len(y):
            continue
        outside = np.unique(y[(y < 0) | (y >= data.num_labels)])
        if len(outside):
            raise DataError('%s %s labels %s%s are not classes of the training set (0..%d)' % (
                data_set, name, ', '.join(map(str, outside[:5])), ', ...' if len(outside) > 5 else '',
                data.num_labels - 1))
    if class_conditional and not data.num_labels:
        raise DataError('class_conditional needs labels: %s has none%s' % (
            data_set, ' (the original downsampled ImageNet has none; Imagenet32 has 1,000 classes)'
            if data_set == 'imagenet' else ''))
    sample = data.train_x[:1000]
    if int(sample.max()) - int(sample.min()) < 8:
        print('warning: the %s training images are (nearly) constant (values %d..%d); the model '
              'will learn little but that' % (data_set, sample.min(), sample.max()))


def mutate(x, rate, seed):
    """Scaled images x with each sub-pixel replaced, with probability `rate`, by a uniform
    value in 0..255 (scaled), as Ren et al. 2019 perturb the inputs of a background model.
    seed: a stateless seed (2 integers)."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    replace = tf.random.stateless_uniform(tf.shape(x), seeds[0]) < rate
    values = tf.random.stateless_uniform(tf.shape(x), seeds[1], 0, 256, dtype=tf.int32)
    return tf.where(replace, scale(values), x)


def steps_per_epoch(num_images, global_batch):
    """Full batches per epoch: the official loader drops the last partial batch."""
    return num_images // global_batch


def epoch_order(num_images, seed, epoch):
    """The training set's order in `epoch`: a permutation fixed by (seed, epoch), so a
    resumed run sees the same batches as an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(num_images)


# tf.data's autotuner, off: deleting an iterator it tunes waits until its current period is
# over (the period doubles up to a minute), seconds to a minute at random at the end of an
# epoch or an evaluation (TensorFlow 2.21). Gathering a batch needs no tuning.
_NO_AUTOTUNE = tf.data.Options()
_NO_AUTOTUNE.autotune.enabled = False


def _pipeline(x, y, index_batches, local_replicas, per_replica_batch):
    """This worker's part of every global batch of indices (index -1: a weight-0 filler) as
    (x, y, weight), each shaped (local_replicas, per_replica_batch, ...): `index_batches`
    holds only this worker's columns. Each batch is gathered from the one array x (in memory
    or memory-mapped): the data set is never copied into the tf.data graph, whatever its size."""
    shape = (local_replicas, per_replica_batch)

    def gather(idx):
        i = np.maximum(idx, 0)
        return (x[i], np.zeros(len(i), np.int32) if y is None else y[i].astype(np.int32),
                (idx >= 0).astype(np.float32))

    def load(idx):
        images, labels, weight = tf.numpy_function(gather, [idx], [tf.uint8, tf.int32, tf.float32],
                                                   stateful=False)
        return (tf.reshape(scale(images), shape + x.shape[1:]), tf.reshape(labels, shape),
                tf.reshape(weight, shape))

    ds = tf.data.Dataset.from_tensor_slices(index_batches).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(2).with_options(_NO_AUTOTUNE)


class Batches:
    """Distributed batches (x, y, weight) for strategy.run, one a step, from global batches
    of indices into x: replica r of the strategy takes columns r * B .. (r + 1) * B. Iterable
    again and again (the test set is evaluated every epoch).

    Not tf.distribute's input iterators: those feed each device through a tf.data pipeline
    of their own, tuned by the autotuner, whose iterator waits out the tuner's period when it
    is deleted (see _NO_AUTOTUNE). Here this worker's replicas' columns are gathered by one
    pipeline and handed out with experimental_distribute_values_from_function."""

    def __init__(self, strategy, x, y, index_batches, per_replica_batch):
        self.strategy, self.x, self.y, self.B = strategy, x, y, per_replica_batch
        ids = strategy.experimental_local_results(
            strategy.experimental_distribute_values_from_function(lambda ctx: ctx.replica_id_in_sync_group))
        self.first, self.local = ids[0], len(ids)  # this worker's replicas: first, first + 1, ...
        if list(ids) != list(range(self.first, self.first + self.local)):
            raise ValueError('the replicas of one worker must have consecutive ids, got %s' % (list(ids),))
        self.index_batches = index_batches[:, self.first * self.B:(self.first + self.local) * self.B]

    def __len__(self):
        return len(self.index_batches)

    def __iter__(self):
        for batch in _pipeline(self.x, self.y, self.index_batches, self.local, self.B):
            yield self.strategy.experimental_distribute_values_from_function(
                lambda ctx, batch=batch: tuple(t[ctx.replica_id_in_sync_group - self.first] for t in batch))


def train_batches(strategy, data, per_replica_batch, seed, epoch, skip=0, max_steps=None):
    """The distributed training batches of `epoch` after the first `skip` ones, at most
    max_steps of them."""
    global_batch = per_replica_batch * strategy.num_replicas_in_sync
    steps = steps_per_epoch(len(data.train_x), global_batch)
    if max_steps:
        steps = min(steps, max_steps)
    order = epoch_order(len(data.train_x), seed, epoch)[:steps * global_batch]
    return Batches(strategy, data.train_x, data.train_y, order.reshape(steps, global_batch)[skip:],
                   per_replica_batch)


def test_batches(strategy, data, per_replica_batch):
    """Every test image once, in order; the last global batch is padded with weight-0
    copies so all replicas see full batches."""
    global_batch = per_replica_batch * strategy.num_replicas_in_sync
    n = len(data.test_x)
    padded = -np.ones(-(-n // global_batch) * global_batch, np.int64)
    padded[:n] = np.arange(n)
    return Batches(strategy, data.test_x, data.test_y, padded.reshape(-1, global_batch), per_replica_batch)


def check_fits(data, model_config, train_config, replicas):
    """That a run of these configs on `replicas` replicas can train on data (config.ConfigErrors
    naming the field), before anything is written."""
    shape = tuple(data.train_x.shape[1:])
    if train_config.replicas != replicas:
        raise ConfigError('{replicas}, but the strategy has %d replicas' % replicas, replicas=train_config.replicas)
    if shape != model_config.image_shape:
        raise ConfigError('{image_shape}, but the data set\'s images are %s' % (shape,),
                          image_shape=model_config.image_shape)
    if model_config.num_labels and model_config.num_labels != data.num_labels:
        raise ConfigError('{num_labels}, but the data set has %s labels' % data.num_labels,
                          num_labels=model_config.num_labels)
    c = train_config
    if len(data.train_x) < c.update_images:
        raise ConfigError('{batch_size} x %d replica(s) x {accum_steps} is more than the %d training images (no '
                          'update)' % (c.replicas, len(data.train_x)), batch_size=c.batch_size,
                          accum_steps=c.accum_steps)
    if c.init_batch_size > len(data.train_x):
        raise ConfigError('{init_batch_size} is more than the %d training images' % len(data.train_x),
                          init_batch_size=c.init_batch_size)
