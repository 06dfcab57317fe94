"""Training and test data as the official data loaders give it (cifar10_data.py,
imagenet_data.py), served through tf.data: uint8 images in memory (or memory-mapped), a
fresh permutation of the training set every epoch from the seed, pixels scaled to [-1, 1]."""

import os
import pickle
import zipfile
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import imagenet

DATA_SETS = ('cifar', 'imagenet', 'npz')
CIFAR_DIR = os.path.join('cifar-10-python', 'cifar-10-batches-py')


class Data(NamedTuple):
    train_x: np.ndarray  # (N, H, W, C) uint8
    train_y: Optional[np.ndarray]  # (N,) int32, or None without labels
    test_x: np.ndarray
    test_y: Optional[np.ndarray]
    num_labels: int  # 0 without labels


def _read_cifar_batch(path):
    """One file of the official CIFAR-10 python layout: N x 3072 uint8 (R, G, B planes)."""
    with open(path, 'rb') as f:
        d = pickle.load(f, encoding='latin1')
    x = np.asarray(d['data'], np.uint8)
    if x.ndim != 2 or x.shape[1] != 3072:
        raise ValueError('%s: expected a CIFAR-10 batch with data of shape (N, 3072), got %s'
                         % (path, x.shape))
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(d['labels'], np.int32)


def cifar_folder(data_dir):
    """The folder of the CIFAR-10 python batches (data_batch_1..5, test_batch) under data_dir:
    cifar-10-python/cifar-10-batches-py (the official code's download), cifar-10-batches-py
    (what the python tarball unpacks to) or data_dir itself; None if there is none."""
    for root in (os.path.join(data_dir, CIFAR_DIR), os.path.join(data_dir, os.path.basename(CIFAR_DIR)),
                 data_dir):
        if os.path.isfile(os.path.join(root, 'data_batch_1')):
            return root
    return None


def load_cifar_official(root):
    """CIFAR-10 from the official python batches in folder root (see cifar_folder)."""
    train = [_read_cifar_batch(os.path.join(root, 'data_batch_%d' % i)) for i in range(1, 6)]
    test_x, test_y = _read_cifar_batch(os.path.join(root, 'test_batch'))
    return Data(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                test_x, test_y, 10)


# Where tensorflow-datasets downloads CIFAR-10 from (probed before it tries, as its own
# retries take minutes to fail without a network).
CIFAR_DOWNLOAD = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz'
LOCAL_ROUTES = ('use local data instead: put the CIFAR-10 python version (cifar-10-python.tar.gz '
                'from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked: the folder '
                'cifar-10-batches-py) in --data_dir, or pass your own images as --data_set=npz '
                '--data_dir=FILE.npz')


def _reachable(url, timeout=20):
    """None if url answers (through any proxy the environment sets), else why not."""
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(urllib.request.Request(url, method='HEAD'), timeout=timeout).close()
        return None
    except urllib.error.HTTPError as e:
        return 'HTTP %d %s' % (e.code, e.reason)
    except (OSError, ValueError) as e:  # URLError, timeouts, refused connections
        return str(getattr(e, 'reason', e))


def _tfds_arrays(splits, with_labels):
    """Data of the (train, test) splits of a tensorflow-datasets image set."""
    import tensorflow_datasets as tfds
    arrays = []
    for ds in splits:
        batches = list(tfds.as_numpy(ds.batch(4096)))
        arrays.append({k: np.concatenate([b[k] for b in batches]) for k in batches[0]})
    labels = [a['label'].astype(np.int32) if with_labels else None for a in arrays]
    return Data(arrays[0]['image'], labels[0], arrays[1]['image'], labels[1], 10 if with_labels else 0)


def _prepared_tfds(name, data_dir, test_split):
    """The (train, test) splits of a tensorflow-datasets copy prepared in data_dir, or None."""
    import tensorflow_datasets as tfds
    try:
        return tfds.load(name, split=['train', test_split], data_dir=data_dir, download=False)
    except Exception:  # not prepared there (tfds raises AssertionError, or others for a broken copy)
        return None


def _load_tfds_cifar(data_dir):
    """tensorflow-datasets' cifar10: the copy prepared in data_dir, else downloaded there
    (data_dir created) if its source answers, else a ValueError naming the local routes."""
    import tensorflow_datasets as tfds
    splits = _prepared_tfds('cifar10', data_dir, 'test')
    if splits is None:
        why = _reachable(CIFAR_DOWNLOAD)
        if why:
            raise ValueError('cifar10 is not in --data_dir=%s and cannot be downloaded (%s: %s); %s'
                             % (data_dir, CIFAR_DOWNLOAD, why, LOCAL_ROUTES)) from None
        try:
            os.makedirs(data_dir, exist_ok=True)
            splits = tfds.load('cifar10', split=['train', 'test'], data_dir=data_dir)
        except Exception as e:  # many types for a failed download or an unwritable folder
            raise ValueError('tensorflow-datasets could not download cifar10 into --data_dir=%s (%s); %s'
                             % (data_dir, str(e).strip().splitlines()[0] if str(e)
                                else type(e).__name__, LOCAL_ROUTES)) from None
    return _tfds_arrays(splits, with_labels=True)


def load_imagenet(data_dir, class_conditional=False):
    """Downsampled ImageNet 32x32 from the files in data_dir (see imagenet.py), else a
    tensorflow-datasets downsampled_imagenet/32x32 prepared there (its download is gone),
    else a ValueError naming the forms to get. Asking labels of a form without them is refused
    before anything is converted."""
    if class_conditional and imagenet.find(data_dir) and not imagenet.has_labels(data_dir):
        raise ValueError('--class_conditional needs labels: the original downsampled ImageNet in '
                         '%s has none (Imagenet32 has 1,000 classes)' % data_dir)
    if not imagenet.find(data_dir):
        splits = _prepared_tfds('downsampled_imagenet/32x32', data_dir, 'validation')
        if splits is not None:
            print('ImageNet 32x32: tensorflow-datasets\' downsampled_imagenet/32x32 in', data_dir)
            return _tfds_arrays(splits, with_labels=False)
    return Data(*imagenet.load(data_dir))


def load_npz(path):
    """Your own images: an .npz with train_x, test_x (N, H, W, C) uint8 and optional
    integer train_y, test_y."""
    try:
        with np.load(path, allow_pickle=False) as f:
            d = {k: f[k] for k in f.files}
    except Exception as e:  # a truncated or foreign file: BadZipFile, EOFError, ValueError, ...
        raise ValueError('--data_dir=%s is not a readable .npz (%s: %s)'
                         % (path, type(e).__name__, str(e).strip().splitlines()[0] if str(e) else '')) from None
    for key in ('train_x', 'test_x'):
        if key not in d:
            raise ValueError('--data_dir=%s: the .npz has no %s (needs train_x and test_x, '
                             'uint8 (N, H, W, C))' % (path, key))
    labels = 'train_y' in d and 'test_y' in d
    if labels:
        for split in ('train', 'test'):
            y, n = d[split + '_y'], len(d[split + '_x'])
            if y.dtype.kind not in 'iu' or y.shape != (n,) or (n and y.min() < 0):
                raise ValueError('--data_dir=%s: %s_y must be %d integer labels >= 0 (one per image '
                                 'of %s_x), got %s %s%s' % (path, split, n, split, y.dtype, y.shape,
                                                             ' with negatives' if y.dtype.kind in 'iu'
                                                             and y.size and y.min() < 0 else ''))
    num_labels = int(max(d['train_y'].max(), d['test_y'].max())) + 1 if labels else 0
    return Data(d['train_x'], d['train_y'].astype(np.int32) if labels else None,
                d['test_x'], d['test_y'].astype(np.int32) if labels else None, num_labels)


def load(data_set, data_dir, class_conditional=False):
    """The Data of --data_set from --data_dir: cifar reads the official python layout if
    data_dir holds it and otherwise tensorflow-datasets' cifar10 (downloaded into data_dir on
    first use); imagenet reads downsampled ImageNet 32x32 from the files in data_dir
    (load_imagenet); npz reads your own arrays (data_dir is the .npz file)."""
    if data_set not in DATA_SETS:
        raise ValueError('--data_set must be one of %s, got %r' % ('|'.join(DATA_SETS), data_set))
    if data_set == 'npz':
        if not os.path.isfile(data_dir):
            raise ValueError('--data_set=npz needs --data_dir to be an .npz file; %r is not a file'
                             % data_dir)
        data = load_npz(data_dir)
    elif data_set == 'imagenet':
        data = load_imagenet(data_dir, class_conditional)
    elif cifar_folder(data_dir):
        data = load_cifar_official(cifar_folder(data_dir))
    else:
        data = _load_tfds_cifar(data_dir)
    check(data, data_set, class_conditional)
    return data


def check(data, data_set, class_conditional):
    for name, x in (('train', data.train_x), ('test', data.test_x)):
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError('%s %s images must be uint8 (N, H, W, C) with C = 1 or 3, got %s %s'
                             % (data_set, name, x.dtype, x.shape))
        if x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError('%s %s images are %dx%d; PixelCNN++ needs height and width divisible '
                             'by 4' % (data_set, name, x.shape[1], x.shape[2]))
        if len(x) == 0:
            raise ValueError('%s has no %s images' % (data_set, name))
    if data.train_x.shape[1:] != data.test_x.shape[1:]:
        raise ValueError('%s train images are %s but test images are %s'
                         % (data_set, data.train_x.shape[1:], data.test_x.shape[1:]))
    if class_conditional and not data.num_labels:
        raise ValueError('--class_conditional needs labels: %s has none%s' % (
            data_set, ' (the original downsampled ImageNet has none; Imagenet32 has 1,000 classes)'
            if data_set == 'imagenet' else ''))
    sample = data.train_x[:1000]
    if int(sample.max()) - int(sample.min()) < 8:
        print('warning: the %s training images are (nearly) constant (values %d..%d); the model '
              'will learn little but that' % (data_set, sample.min(), sample.max()))


def scale(x):
    """uint8 [0, 255] -> float32 [-1, 1], as the official make_feed_dict."""
    return (tf.cast(x, tf.float32) - 127.5) / 127.5


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


def _pipeline(x, y, index_batches, input_context, per_replica_batch):
    """Per-replica batches (x, y, weight) for this worker from global batches of indices
    (index -1: a weight-0 filler). Worker w takes its replicas' slices of every global batch.
    Each batch is gathered from the one array x (in memory or memory-mapped): the data set is
    never copied into the tf.data graph, whatever its size."""
    local = input_context.num_replicas_in_sync // input_context.num_input_pipelines
    start = input_context.input_pipeline_id * local * per_replica_batch
    mine = index_batches[:, start:start + local * per_replica_batch].reshape(-1, per_replica_batch)

    def gather(idx):
        i = np.maximum(idx, 0)
        return (x[i], np.zeros(len(i), np.int32) if y is None else y[i].astype(np.int32),
                (idx >= 0).astype(np.float32))

    def load(idx):
        images, labels, weight = tf.numpy_function(gather, [idx], [tf.uint8, tf.int32, tf.float32],
                                                   stateful=False)
        images.set_shape((per_replica_batch,) + x.shape[1:])
        labels.set_shape((per_replica_batch,))
        weight.set_shape((per_replica_batch,))
        return scale(images), labels, weight

    ds = tf.data.Dataset.from_tensor_slices(mine).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def train_batches(strategy, data, per_replica_batch, seed, epoch, skip=0, max_steps=None):
    """The distributed training batches of `epoch` after the first `skip` ones, at most
    max_steps of them."""
    global_batch = per_replica_batch * strategy.num_replicas_in_sync
    steps = steps_per_epoch(len(data.train_x), global_batch)
    if max_steps:
        steps = min(steps, max_steps)
    order = epoch_order(len(data.train_x), seed, epoch)[:steps * global_batch]
    index_batches = order.reshape(steps, global_batch)[skip:]
    return strategy.distribute_datasets_from_function(
        lambda ctx: _pipeline(data.train_x, data.train_y, index_batches, ctx, per_replica_batch))


def test_batches(strategy, data, per_replica_batch):
    """Every test image once, in order; the last global batch is padded with weight-0
    copies so all replicas see full batches."""
    global_batch = per_replica_batch * strategy.num_replicas_in_sync
    n = len(data.test_x)
    padded = -np.ones(-(-n // global_batch) * global_batch, np.int64)
    padded[:n] = np.arange(n)
    return strategy.distribute_datasets_from_function(
        lambda ctx: _pipeline(data.test_x, data.test_y, padded.reshape(-1, global_batch), ctx,
                              per_replica_batch))


IMAGE_FILES = ('.png', '.jpg', '.jpeg')


def read_images(spec, data_dir=None):
    """A set of uint8 images (N, H, W, C) and its labels (or None) from a SPEC: an .npz (key
    x, else test_x; labels y, else test_y), a folder of PNG/JPEG files (sorted by name), or
    tfds:NAME:SPLIT (tensorflow-datasets, prepared in data_dir). Errors name the SPEC."""
    if spec.startswith('tfds:'):
        parts = spec.split(':')
        if len(parts) != 3 or not all(parts[1:]):
            raise ValueError('%s: expected tfds:NAME:SPLIT, e.g. tfds:svhn_cropped:test' % spec)
        import tensorflow_datasets as tfds
        try:
            split = tfds.load(parts[1], split=parts[2], data_dir=data_dir)
        except Exception as e:  # tfds raises many types for unknown names and missing data
            raise ValueError('%s: tensorflow-datasets could not load it (%s)'
                             % (spec, str(e).splitlines()[0] if str(e) else type(e).__name__)) from None
        batches = list(tfds.as_numpy(split.batch(4096)))
        if not batches:
            raise ValueError('%s: no images' % spec)
        x = np.concatenate([b['image'] for b in batches])
        y = np.concatenate([b['label'] for b in batches]) if 'label' in batches[0] else None
    elif os.path.isdir(spec):
        names = sorted(n for n in os.listdir(spec) if n.lower().endswith(IMAGE_FILES))
        if not names:
            raise ValueError('%s: a folder with no PNG or JPEG images' % spec)
        x, y = [], None
        for name in names:
            path = os.path.join(spec, name)
            try:
                x.append(tf.io.decode_image(tf.io.read_file(path), expand_animations=False).numpy())
            except (tf.errors.OpError, ValueError):
                raise ValueError('%s: not a readable image' % path) from None
        shapes = {image.shape for image in x}
        if len(shapes) > 1:
            raise ValueError('%s: the images have different shapes %s' % (spec, sorted(shapes)[:3]))
        x = np.stack(x)
    elif os.path.isfile(spec):
        try:
            with np.load(spec) as f:
                arrays = {k: f[k] for k in f.files if k in ('x', 'y', 'test_x', 'test_y')}
        except (OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as e:
            raise ValueError('%s: not a readable .npz (%s)' % (spec, e)) from None
        key = 'x' if 'x' in arrays else 'test_x'
        if key not in arrays:
            raise ValueError('%s: the .npz has neither x nor test_x' % spec)
        x, y = arrays[key], arrays.get('y' if key == 'x' else 'test_y')
    else:
        raise ValueError('%s: no such file or folder (expected an .npz, a folder of images or '
                         'tfds:NAME:SPLIT)' % spec)
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) == 0:
        raise ValueError('%s: expected uint8 images (N, H, W, C), got %s %s' % (spec, x.dtype, x.shape))
    if x.ndim == 3:
        x = x[..., None]
    if x.shape[-1] not in (1, 3):
        raise ValueError('%s: images must have 1 or 3 channels, got shape %s' % (spec, x.shape))
    if y is not None and len(y) != len(x):
        raise ValueError('%s: %d labels for %d images' % (spec, len(y), len(x)))
    return x, y


def fit_images(images, shape):
    """Images made to the model's (H, W, C): smaller ones zero-padded in the centre, larger
    ones centre-cropped, grayscale repeated to 3 channels. Returns (images, what was done:
    a list of phrases, empty when nothing)."""
    H, W, C = shape
    done = []
    if images.shape[-1] != C:
        if images.shape[-1] != 1:
            raise ValueError('images of %d channels cannot be fitted to %d' % (images.shape[-1], C))
        images = np.repeat(images, C, axis=-1)
        done.append('grayscale repeated to %d channels' % C)
    for axis, size in ((1, H), (2, W)):
        have = images.shape[axis]
        if have > size:
            start = (have - size) // 2
            images = np.take(images, np.arange(start, start + size), axis=axis)
            done.append('%s centre-cropped from %d to %d' % ('height' if axis == 1 else 'width', have, size))
        elif have < size:
            pad = [(0, 0)] * 4
            pad[axis] = ((size - have) // 2, size - have - (size - have) // 2)
            images = np.pad(images, pad)
            done.append('%s zero-padded from %d to %d' % ('height' if axis == 1 else 'width', have, size))
    return images, done
