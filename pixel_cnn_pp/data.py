"""Training and test data as the official data loaders give it (cifar10_data.py,
imagenet_data.py), and the images people have, served through tf.data: uint8 images in memory
(or memory-mapped), or image files decoded as they are needed (folders.ImageFiles); a fresh
permutation of the training set every epoch from the seed, pixels scaled to [-1, 1]
(images.scale). Data files are read so that they cannot run code (datafiles.load_pickle).

The sets (data_set): cifar, imagenet, npz (an .npz: train_x and test_x, or x alone), folder
(a folder of image files: folders.py) and tfds:NAME[:SPLIT] (any tensorflow-datasets image
set). A set without a test split has one held out: a fixed share of each class, chosen with
a fixed seed (hold_out), the same in every run and script."""

import hashlib
import json
import os
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import config, folders, imagenet, progress, tfds_sets
from pixel_cnn_pp.datafiles import DataError, first_line, is_npz, load_pickle, read_npz
from pixel_cnn_pp.config import ConfigError, check_channels
from pixel_cnn_pp.images import scale
from pixel_cnn_pp.training import epoch_order

CIFAR_DIR = os.path.join('cifar-10-python', 'cifar-10-batches-py')


class Data(NamedTuple):
    train_x: np.ndarray  # (N, H, W, C) uint8, or a folders.ImageFiles that reads them as needed
    train_y: Optional[np.ndarray]  # (N,) int32, or None without labels
    test_x: np.ndarray
    test_y: Optional[np.ndarray]
    num_labels: int  # 0 without labels
    class_names: Optional[tuple] = None  # label k is class_names[k], where the set names its classes


CIFAR_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')


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
               'in {data_dir:name}')


def read_tfds(name, splits, data_dir, routes=(), verbose=False, route_values=None):
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
    return [(a['image'], a.get('label'))
            for a in tfds_sets.load(name, splits, data_dir, routes, verbose, route_values=route_values)]


def load_imagenet(data_dir, class_conditional=False, verbose=False):
    """Downsampled ImageNet 32x32 from the files in data_dir (see imagenet.py), else a
    tensorflow-datasets downsampled_imagenet/32x32 prepared there (its download is gone),
    else a DataError naming the forms to get. Asking labels of a form without them is refused
    before anything is converted."""
    if class_conditional and imagenet.find(data_dir) and not imagenet.has_labels(data_dir):
        raise DataError('{class_conditional} needs labels: the original downsampled ImageNet in {data_dir} '
                        'has none (Imagenet32 has 1,000 classes)', class_conditional=True, data_dir=data_dir)
    if not imagenet.find(data_dir):
        splits = tfds_sets.load('downsampled_imagenet/32x32', ['train', 'validation'], data_dir,
                                verbose=verbose, download=False)
        if splits is not None:
            print('ImageNet 32x32: tensorflow-datasets\' downsampled_imagenet/32x32 in', data_dir)
            return Data(splits[0]['image'], None, splits[1]['image'], None, 0)
    return Data(*imagenet.load(data_dir))


HELD_OUT_SEED = 1701  # of every held-out split: the same images held out in every run


def hold_out(labels, n, fraction):
    """(training indices, test indices) of a set of n images without a test split, each
    sorted: round(fraction x its size) of each class (labels: None, one class) held out, at
    random with a fixed seed (HELD_OUT_SEED and the class), at least one image of each class
    left to train on."""
    groups = [(0, np.arange(n))] if labels is None else [(int(c), np.flatnonzero(labels == c))
                                                          for c in np.unique(labels)]
    test = [np.random.default_rng([HELD_OUT_SEED, c]).permutation(group)[:min(int(round(fraction * len(group))),
                                                                             len(group) - 1)]
            for c, group in groups]
    test = np.sort(np.concatenate(test)).astype(np.int64)
    return np.setdiff1d(np.arange(n), test), test


def _held_out(what, x, y, fraction):
    """(train_x, train_y, test_x, test_y) of arrays x, y (y: None) split by hold_out, said
    in one line."""
    train, test = hold_out(y, len(x), fraction)
    print('%s: no test split; %s of its %s images held out as the test set (%g of %s, a fixed seed)'
          % (what, '{:,}'.format(len(test)), '{:,}'.format(len(x)), fraction,
             'each class' if y is not None else 'the set'))
    pick = (lambda a, i: None if a is None else a[i])
    return pick(x, train), pick(y, train), pick(x, test), pick(y, test)


def check_labels(y, n, what, field='data_dir', value=None):
    """Labels y of n images as read: integers >= 0, one per image (a DataError naming them)."""
    y = np.asarray(y)
    if y.dtype.kind not in 'iu' or y.shape != (n,) or (n and y.min() < 0):
        raise DataError('{%s}: %s must be %d integer labels >= 0 (one per image), got %s %s%s' % (
            field, what, n, y.dtype, y.shape, ' with negatives' if y.dtype.kind in 'iu' and y.size and y.min() < 0
            else ''), **{field: value})
    return y.astype(np.int32)


def classes_of(train_y, field='data_dir', value=None):
    """The number of classes of training labels: K, the largest + 1, each of 0..K-1 with
    training images (a DataError otherwise, saying how to renumber)."""
    if not len(train_y):
        return 0
    largest, present = int(train_y.max()), len(np.unique(train_y))
    if present != largest + 1:
        raise DataError('{%s}: the classes are 0..K-1 and each must have training images, but the largest '
                        'label of train_y is %d and only %d of the %d values 0..%d occur (renumber them, e.g. '
                        'np.unique(y, return_inverse=True))' % (field, largest, present, largest + 1, largest),
                        **{field: value})
    return largest + 1


def load_npz(path, held_out=config.HELD_OUT):
    """Your own images: an .npz with train_x, test_x (N, H, W, C) uint8 and optional integer
    train_y, test_y: the classes 0..K-1, every one of them in train_y; or x alone (and y), of
    which a share is held out as the test set (hold_out). Optional class_names: the name of
    each class (strings)."""
    if not is_npz(path):
        raise DataError('{data_dir} is not an .npz (expected an .npz file with train_x and test_x, or x)',
                        data_dir=path)
    d = read_npz(path, what='{data_dir}', data_dir=path)
    if 'train_x' not in d and 'x' in d:
        y = None if 'y' not in d else check_labels(d['y'], len(d['x']), 'y', value=path)
        d['train_x'], d['train_y'], d['test_x'], d['test_y'] = _held_out(path, d['x'], y, held_out)
        if y is None:
            del d['train_y'], d['test_y']
    for key in ('train_x', 'test_x'):
        if key not in d:
            raise DataError('{data_dir}: the .npz has no %s (needs train_x and test_x, or x: uint8 (N, H, W, C))'
                            % key, data_dir=path)
    if not ('train_y' in d and 'test_y' in d):
        return Data(d['train_x'], None, d['test_x'], None, 0)
    train_y, test_y = (check_labels(d[split + '_y'], len(d[split + '_x']), split + '_y', value=path)
                       for split in ('train', 'test'))
    names = d.get('class_names')
    num_labels = classes_of(train_y, value=path)
    if names is not None and (names.dtype.kind != 'U' or names.shape != (num_labels,)):
        raise DataError('{data_dir}: class_names must be %d strings (one per class), got %s %s'
                        % (num_labels, names.dtype, names.shape), data_dir=path)
    return Data(d['train_x'], train_y, d['test_x'], test_y, num_labels,
                None if names is None else tuple(str(n) for n in names))


def load_tfds(data_set, data_dir, held_out=config.HELD_OUT, verbose=False):
    """tfds:NAME (its train and test splits; a set without a test split: its train split,
    a share held out) or tfds:NAME:SPLIT (that split, a share held out), with its labels and
    class names when it has a label feature."""
    parts = data_set.split(':', 2)
    name = parts[1]
    values = dict(OWN_IMAGES, data_set=data_set)
    first = parts[2] if len(parts) == 3 else 'train'
    [(x, y)] = read_tfds(name, [first], data_dir, [NPZ_ROUTE], verbose, values)
    available = tfds_sets.splits(name, data_dir)
    if len(parts) == 2 and (available is None or 'test' in available):
        [(test_x, test_y)] = read_tfds(name, ['test'], data_dir, [NPZ_ROUTE], verbose, values)
        print('%s: %s training and %s test images' % (data_set, '{:,}'.format(len(x)), '{:,}'.format(len(test_x))))
    else:
        x, y, test_x, test_y = _held_out(data_set, x, None if y is None else np.asarray(y), held_out)
    if x.ndim == 3:
        x, test_x = x[..., None], test_x[..., None]
    if y is None:
        return Data(x, None, test_x, None, 0)
    train_y = check_labels(y, len(x), 'its train labels', 'data_set', data_set)
    test_y = check_labels(test_y, len(test_x), 'its test labels', 'data_set', data_set)
    names = tfds_sets.label_names(name, data_dir)
    num_labels = len(names) if names else classes_of(train_y, 'data_set', data_set)
    return Data(x, train_y, test_x, test_y, num_labels, names)


def load_folder(data_dir, held_out=config.HELD_OUT, image_size=None, skip_unreadable=False, cache='',
                class_names=None, channels=None, progress_bar=True):
    """A folder of image files (folders.py): DIR/train and DIR/test, or one folder of which a
    share is held out (hold_out); flat, or one subfolder per class (class_names: a model's
    classes, which the folders' names are looked up in; else the sorted names). Images of
    one size whose height and width are multiples of 4 are read as they are; image_size
    (H, W): every image resized and centre-cropped to it (folders.fit_image). channels: a
    model's (1 or 3), else 3 if any image is in color, else 1. An unreadable file is a
    DataError unless skip_unreadable (then named, and left out). cache: a file the decoded
    images are kept in (cached). Nothing is decoded here: the images are ImageFiles (or
    memory-mapped from the cache)."""
    if not os.path.isdir(data_dir):
        raise DataError('{data_dir} is not a folder ({data_set=_folder} reads a folder of image files)',
                        data_dir=data_dir, data_set='folder', _folder='folder')
    train_dir, test_dir = folders.splits(data_dir)
    train = folders.listing(train_dir, class_names)
    test = folders.listing(test_dir, train.class_names) if test_dir else None
    if test and (train.labels is None) != (test.labels is None):
        flat, classes = (train_dir, test_dir) if train.labels is None else (test_dir, train_dir)
        raise DataError('{data_dir}: %s is flat but %s has class folders; give both the same layout'
                        % (flat, classes), data_dir=data_dir)
    paths = train.paths + (test.paths if test else [])
    scanned = folders.scan(paths)
    if scanned.unreadable and not skip_unreadable:
        path, why = scanned.unreadable[0]
        raise DataError('{data_dir}: %s is not readable (%s)%s; {skip_unreadable:name} leaves such files out' % (
            path, why, ', nor are %d more files' % (len(scanned.unreadable) - 1) if len(scanned.unreadable) > 1
            else ''), data_dir=data_dir, skip_unreadable=True)
    folders.skipped(scanned.unreadable)
    ok = np.array([info is not None for info in scanned.infos], bool)
    infos = [info for info in scanned.infos if info is not None]
    paths = [p for p, good in zip(paths, ok) if good]
    n_train = int(ok[:len(train.paths)].sum())
    if not n_train or (test and n_train == len(paths)):
        raise DataError('{data_dir}: no readable image files in %s' % (train_dir if not n_train else test_dir),
                        data_dir=data_dir)
    labels = None if train.labels is None else np.concatenate(
        [train.labels] + ([test.labels] if test else []))[ok]
    C = folders.set_channels(infos, paths, channels)
    folders.phrases(folders.conversions(infos, paths, C))
    fit = None
    if image_size:
        size, fit = tuple(image_size), 'resize'
        n = sum((i.height, i.width) != size for i in infos)
        if n:
            print('%s: %s of the %s images resized and centre-cropped to %dx%d' % (
                data_dir, '{:,}'.format(n), '{:,}'.format(len(infos)), size[0], size[1]))
    else:
        size, odd = (infos[0].height, infos[0].width), folders.odd_size(infos, paths)
        if odd:
            raise DataError('{data_dir}: %s is %dx%d but %s is %dx%d (height x width): the images are not one '
                            'size; %s' % (odd[0], odd[1][0], odd[1][1], paths[0], size[0], size[1], RESIZE),
                            data_dir=data_dir, image_size=None)
        if not config.fits(size):
            raise DataError('{data_dir}: its images are %dx%d (height x width; %s, the first), and PixelCNN++ '
                            'needs a height and width that are multiples of 4; %s' % (size[0], size[1], paths[0], RESIZE),
                            data_dir=data_dir, image_size=None)
    files = folders.ImageFiles(paths, size + (C,), fit, [i.depth == 16 for i in infos])
    train_i, test_i = np.arange(n_train), np.arange(n_train, len(paths))
    if not test:
        what = '%s (no test folder)' % (train_dir if train_dir != data_dir else data_dir)
        train_i, test_i = hold_out(None if labels is None else labels[:n_train], n_train, held_out)
        print('%s: %s of its %s images held out as the test set (%g of %s, a fixed seed)' % (
            what, '{:,}'.format(len(test_i)), '{:,}'.format(n_train), held_out,
            'each class' if labels is not None else 'the folder'))
    train_x = folders.ImageFiles([paths[i] for i in train_i], files.shape[1:], fit, files.deep[train_i])
    test_x = folders.ImageFiles([paths[i] for i in test_i], files.shape[1:], fit, files.deep[test_i])
    if cache:
        train_x, test_x = cached(cache, train_x, test_x, progress_bar)
    names = train.class_names
    print('%s: %s training and %s test images of %s%s' % (
        data_dir, '{:,}'.format(len(train_x)), '{:,}'.format(len(test_x)), 'x'.join(map(str, files.shape[1:])),
        ', %d classes (%s)' % (len(names), ', '.join(names[:5]) + (', ...' if len(names) > 5 else ''))
        if names else ''))
    if labels is None:
        return Data(train_x, None, test_x, None, 0)
    return Data(train_x, labels[train_i], test_x, labels[test_i], len(names), names)


RESIZE = 'pass {image_size:name}=H,W to resize and centre-crop every image to one size (multiples of 4)'
CACHE_VERSION = 1


def _fingerprint(sets):
    """What a cache records of its files: a digest of every file's path, size and modification
    time, in order, and of how each is read (shape, fit, 16 bits)."""
    digest = hashlib.sha256()
    for files in sets:
        digest.update(json.dumps([files.shape[1:], files.fit, len(files)]).encode())
        for path, deep in zip(files.paths, files.deep):
            st = os.stat(path)
            digest.update(('%s\0%d\0%d\0%d\n' % (os.path.abspath(path), st.st_size, st.st_mtime_ns, deep)).encode())
    return digest.hexdigest()


def cached(path, train_x, test_x, progress_bar=True):
    """(train_x, test_x) memory-mapped from the cache file at `path` (a .npy of every image,
    train then test, with path + '.json' saying what it was made from): built first, each
    file decoded once, when it is missing or was made from other files or settings. Built
    into a temporary file renamed into place when complete (a kill leaves the old cache or
    none); a file that does not decode is a DataError naming it."""
    sets = (train_x, test_x)
    manifest = {'version': CACHE_VERSION, 'counts': [len(train_x), len(test_x)], 'files': _fingerprint(sets)}
    shape = (len(train_x) + len(test_x),) + train_x.shape[1:]
    try:
        with open(path + '.json') as f:
            current = json.load(f) == manifest
        a = np.load(path, mmap_mode='r') if current else None
        why = None if current and a.shape == shape and a.dtype == np.uint8 else 'it was made from other files'
    except FileNotFoundError:
        a, why = None, None
    except (OSError, ValueError) as e:
        a, why = None, 'it is unreadable (%s)' % first_line(e)
    if why is None and a is not None:
        print('decoded images: the cache %s' % path)
        return a[:len(train_x)], a[len(train_x):]
    print('decoding the images into the cache %s%s' % (path, ', as %s' % why if why else ''))
    tmp = '%s.partial%d' % (path, os.getpid())
    try:
        out = np.lib.format.open_memmap(tmp, 'w+', np.uint8, shape)
        bar = progress.bar(len(out), enabled=progress_bar, unit_name='image')
        done = 0
        for files in sets:
            for k, batch in enumerate(_batches(files)):
                out[done:done + len(batch)] = batch
                done += len(batch)
                bar.update(done)
        out.flush()
        del out
        with open(tmp + '.json', 'w') as f:
            json.dump(manifest, f)
        os.replace(tmp, path)
        os.replace(tmp + '.json', path + '.json')
    except BaseException:
        for leftover in (tmp, tmp + '.json'):
            if os.path.exists(leftover):
                os.remove(leftover)
        raise
    a = np.load(path, mmap_mode='r')
    return a[:len(train_x)], a[len(train_x):]


def _batches(files, size=1024):
    """The images of ImageFiles in order, `size` at a time; a file that does not decode is
    the DataError naming it."""
    k = 0
    try:
        for k, batch in enumerate(files.dataset(np.arange(len(files))).batch(size)):
            yield batch.numpy()
    except tf.errors.OpError:
        raise files.culprit(np.arange(len(files))[k * size:(k + 1) * size]) from None


# Where else a training set comes from (the rest of data.load's forms), and its settings' values.
NPZ_ROUTE = 'pass your own images as {data_set=_folder} {data_dir=_dir} (or {data_set=_npz} {data_dir=_file})'
OWN_IMAGES = {'_folder': 'folder', '_dir': 'DIR', '_npz': 'npz', '_file': 'FILE.npz'}


def load(data_set, data_dir, class_conditional=False, verbose=False, *, image_size=None, held_out=config.HELD_OUT,
         skip_unreadable=False, cache='', class_names=None, channels=None, progress_bar=True):
    """The Data of data_set from data_dir: cifar reads the official python layout if
    data_dir holds it and otherwise tensorflow-datasets' cifar10 (downloaded into data_dir on
    first use: read_tfds); imagenet reads downsampled ImageNet 32x32 from the files in
    data_dir (load_imagenet); npz reads your own arrays (data_dir is the .npz file); folder a
    folder of image files (load_folder); tfds:NAME[:SPLIT] a tensorflow-datasets set
    (load_tfds). A set without a test split has `held_out` of it held out. image_size (H, W):
    every image resized and centre-cropped to it; class_names, channels: a trained model's
    (the folders' classes are looked up in them; its channels); skip_unreadable, cache: see
    load_folder. A data problem is a DataError naming the argument (data_set, data_dir,
    class_conditional, image_size, ...) or file. verbose: tensorflow-datasets' progress bars
    and warnings."""
    config.check_data_set(data_set)
    if data_set == 'npz':
        if not os.path.isfile(data_dir):
            raise DataError('{data_set} needs {data_dir:name} to be an .npz file; {data_dir} is not a file',
                            data_dir=data_dir, data_set=data_set)
        data = load_npz(data_dir, held_out)
    elif data_set == 'imagenet':
        data = load_imagenet(data_dir, class_conditional, verbose)
    elif data_set == 'folder':
        data = load_folder(data_dir, held_out, image_size, skip_unreadable, cache, class_names, channels,
                           progress_bar)
    elif config.is_tfds(data_set):
        data = load_tfds(data_set, data_dir, held_out, verbose)
    else:
        (train_x, train_y), (test_x, test_y) = read_tfds('cifar10', ['train', 'test'], data_dir, [NPZ_ROUTE],
                                                         verbose, dict(OWN_IMAGES, data_set=data_set))
        data = Data(train_x, train_y.astype(np.int32), test_x, test_y.astype(np.int32), 10, CIFAR_CLASSES)
    if image_size and data_set != 'folder' and data.train_x.shape[1:3] != tuple(image_size):
        print('%s: %s images resized and centre-cropped to %dx%d' % (
            data_set, '{:,}'.format(len(data.train_x) + len(data.test_x)), image_size[0], image_size[1]))
        data = data._replace(train_x=folders.fit_array(data.train_x, image_size),
                             test_x=folders.fit_array(data.test_x, image_size))
    check(data, data_set, class_conditional)
    return data


def check(data, data_set, class_conditional):
    """Refuses (DataError) images PixelCNN++ cannot model, and labels outside the classes
    0..num_labels-1 (a test label the training set does not have, a negative one)."""
    for name, x in (('train', data.train_x), ('test', data.test_x)):
        if x.dtype != np.uint8:
            raise DataError('{data_set}: its %s images must be uint8, got %s %s' % (name, x.dtype, x.shape),
                            data_set=data_set)
        config.check_images(x.shape, '%s %s images' % (data_set, name))
        if len(x) == 0:
            raise DataError('{data_set} has no %s images' % name, data_set=data_set)
    if data.train_x.shape[1:] != data.test_x.shape[1:]:
        raise DataError('{data_set}: its train images are %s but its test images are %s'
                        % (data.train_x.shape[1:], data.test_x.shape[1:]), data_set=data_set)
    for name, y in (('train', data.train_y), ('test', data.test_y)):
        if y is None or not len(y):
            continue
        outside = np.unique(y[(y < 0) | (y >= data.num_labels)])
        if len(outside):
            raise DataError('{data_set}: its %s labels %s%s are not classes of the training set (0..%d)' % (
                name, ', '.join(map(str, outside[:5])), ', ...' if len(outside) > 5 else '', data.num_labels - 1),
                data_set=data_set)
    if class_conditional and not data.num_labels:
        raise DataError('{class_conditional:name} needs labels: {data_set} has none%s' % (
            ' (the original downsampled ImageNet has none; Imagenet32 has 1,000 classes)'
            if data_set == 'imagenet' else ' (a folder has them as one subfolder per class)'
            if data_set == 'folder' else ''), class_conditional=True, data_set=data_set)
    sample = data.train_x[:256 if isinstance(data.train_x, folders.ImageFiles) else 1000]
    if int(sample.max()) - int(sample.min()) < 8:
        print('warning: the %s training images are (nearly) constant (values %d..%d); the model '
              'will learn little but that' % (data_set, sample.min(), sample.max()))


def steps_per_epoch(num_images, global_batch):
    """Full batches per epoch: the official loader drops the last partial batch."""
    return num_images // global_batch


# tf.data's autotuner, off: deleting an iterator it tunes waits until its current period is
# over (the period doubles up to a minute), seconds to a minute at random at the end of an
# epoch or an evaluation (TensorFlow 2.21). Gathering a batch needs no tuning.
_NO_AUTOTUNE = tf.data.Options()
_NO_AUTOTUNE.autotune.enabled = False


def _pipeline(x, y, index_batches, local_replicas, per_replica_batch):
    """This worker's part of every global batch of indices (index -1: a weight-0 filler) as
    (x, y, weight), each shaped (local_replicas, per_replica_batch, ...): `index_batches`
    holds only this worker's columns. Each batch is gathered from the one array x (in memory
    or memory-mapped): the data set is never copied into the tf.data graph, whatever its size.
    Image files (folders.ImageFiles) are read and decoded in the pipeline, several at a time,
    in the batches' order."""
    shape = (local_replicas, per_replica_batch)
    if isinstance(x, folders.ImageFiles):
        return _file_pipeline(x, y, index_batches, shape)

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


def _file_pipeline(x, y, index_batches, shape):
    """_pipeline of image files: one tf.data map over the batches' files (PARALLEL decoded at
    a time, in order), batched back into the global batches; labels and weights gathered
    beside them."""
    with tf.device('/cpu:0'):
        labels = tf.constant(np.zeros(len(x), np.int32) if y is None else np.asarray(y, np.int32))
    images = x.dataset(np.maximum(index_batches.reshape(-1), 0)).batch(max(index_batches.shape[1], 1))

    def finish(images, idx):
        return (tf.reshape(scale(images), shape + x.shape[1:]),
                tf.reshape(tf.gather(labels, tf.maximum(idx, 0)), shape), tf.reshape(tf.cast(idx >= 0, tf.float32), shape))

    ds = tf.data.Dataset.zip((images, tf.data.Dataset.from_tensor_slices(index_batches))).map(finish)
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
        k = 0
        try:
            for k, batch in enumerate(_pipeline(self.x, self.y, self.index_batches, self.local, self.B)):
                yield self.strategy.experimental_distribute_values_from_function(
                    lambda ctx, batch=batch: tuple(t[ctx.replica_id_in_sync_group - self.first] for t in batch))
        except tf.errors.OpError:
            if not isinstance(self.x, folders.ImageFiles):
                raise
            raise self.x.culprit(np.maximum(self.index_batches[k:k + 3].reshape(-1), 0)) from None


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


def file_stem(data_set):
    """data_set as a part of a file name (the run's test_bpd_*.npz and *_sample*.png):
    tfds:NAME[:SPLIT] as tfds_NAME[_SPLIT], NAME/CONFIG's slash and other characters that
    are not letters, digits, '.', '-' or '_' as '_'."""
    return ''.join(c if c.isalnum() or c in '.-_' else '_' for c in data_set)


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
    names = train_config.class_names
    if model_config.num_labels and names is not None and data.class_names is not None and names != data.class_names:
        raise ConfigError('{class_names}, but the data set\'s classes are %s' % (list(data.class_names),),
                          class_names=list(names))
    c = train_config
    if len(data.train_x) < c.update_images:
        raise ConfigError('{batch_size} x %d replica(s) x {accum_steps} is more than the %d training images (no '
                          'update)' % (c.replicas, len(data.train_x)), batch_size=c.batch_size,
                          accum_steps=c.accum_steps)
    if c.init_batch_size > len(data.train_x):
        raise ConfigError('{init_batch_size} is more than the %d training images' % len(data.train_x),
                          init_batch_size=c.init_batch_size)


# ---------------------------------------------------------------------- image sets of the scripts

class ImageSet(NamedTuple):
    """A set of images read from a SPEC (read_set)."""
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: Optional[np.ndarray]  # (N,) integers, or None
    keys: tuple  # the .npz keys read (('x', 'y'), ('test_x',), ...); () for a folder or tfds
    done: list  # what was done to fit them to the model (phrases), empty when nothing
    class_names: Optional[tuple]  # of a folder with class subfolders
    total: int  # images in the set (more than images holds when a limit cut it or files were unreadable)
    files: Optional[tuple] = None  # a folder's: each image's file, relative to the SPEC


# Where else a set's images come from (the other forms of a SPEC).
IMAGES_ROUTE = 'pass the images as an .npz or a folder of image files'
SPEC_FORMS = 'an .npz file, a folder of images, or tfds:NAME[:SPLIT]'


def _read_tfds(spec, data_dir, verbose):
    """The images and labels (or None) of tfds:NAME[:SPLIT] (the test split if none), as
    data.read_tfds reads it (CIFAR-10's python batches if data_dir holds them, else the
    tensorflow-datasets copy prepared in data_dir or downloaded there)."""
    parts = spec.split(':', 2)  # a split may have colons: train[:10%]
    if not all(parts[1:]):
        raise DataError('%s: expected tfds:NAME[:SPLIT], e.g. tfds:svhn_cropped:test' % spec)
    try:
        [(x, y)] = read_tfds(parts[1], [parts[2] if len(parts) == 3 else 'test'], data_dir,
                                  [IMAGES_ROUTE], verbose)
    except DataError as e:
        raise e.within('%s: ' % spec) from None
    return x, y


def folder_split(folder):
    """The folder a SPEC that is a folder stands for: DIR/test when DIR holds train/ and
    test/ (train.py's layout), DIR/train when it holds train/ alone, else DIR."""
    train, test = folders.splits(folder)
    return test or train


def _read_folder(spec, shape, resize, class_names, limit):
    """A folder's images as read_set reads them (unreadable files skipped with a warning
    each)."""
    root = folder_split(spec)
    if root != spec:
        print('%s: reading %s' % (spec, root))
    found = folders.listing(root, class_names)
    paths = found.paths[:limit] if limit else found.paths
    scanned = folders.scan(paths)
    folders.skipped(scanned.unreadable)
    keep = [k for k, info in enumerate(scanned.infos) if info is not None]
    if not keep:
        raise DataError('%s: a folder with no readable image files (%d unreadable)' % (root, len(paths)))
    infos, paths = [scanned.infos[k] for k in keep], [paths[k] for k in keep]
    labels = None if found.labels is None else found.labels[keep]
    channels = folders.set_channels(infos, paths, shape[2] if shape else None)
    folders.phrases(folders.conversions(infos, paths, channels))
    odd = folders.odd_size(infos, paths)
    size, fit, done = (infos[0].height, infos[0].width), None, []
    if odd and not shape:
        raise DataError('%s: the images are not one size: %s is %dx%d, %s %dx%d (height x width)' % (
            root, odd[0], odd[1][0], odd[1][1], paths[0], infos[0].height, infos[0].width))
    if odd or (shape and resize and size != tuple(shape[:2])):
        size, fit = tuple(shape[:2]), 'resize' if resize else 'pad'
        n = sum((i.height, i.width) != size for i in infos)
        done.append('%d %s to %dx%d' % (n, 'resized and centre-cropped' if resize else 'zero-padded or centre-cropped',
                                        size[0], size[1]))
    x = folders.ImageFiles(paths, size + (channels,), fit, [i.depth == 16 for i in infos])[:]
    return x, labels, found.class_names, done, len(found.paths), tuple(os.path.relpath(p, spec) for p in paths)


def read_set(spec, data_dir=None, verbose=False, shape=None, resize=False, class_names=None, limit=None):
    """The ImageSet of a SPEC: an .npz (key x, else test_x; labels y, else test_y), a folder
    of image files (folder_split; flat, or one subfolder per class: its labels, by
    class_names when given (a model's classes), else the sorted subfolder names), or
    tfds:NAME[:SPLIT] (_read_tfds; verbose: tensorflow-datasets' progress bars and
    warnings). shape: a model's (H, W, C), which the images are fitted to: resized and
    centre-cropped (fit_image) if `resize` (the model was trained so: its config.json's
    image_size), else zero-padded or centre-cropped (fit_images); without it, images as they
    are (a folder's of one size). limit: the first `limit` images only. A folder's unreadable
    files are skipped, a warning line each. Errors (DataError) name the SPEC or the file."""
    keys, names, done, total, paths = (), None, [], None, None
    if spec.startswith('tfds:'):
        x, y = _read_tfds(spec, data_dir, verbose)
    elif os.path.isdir(spec):
        x, y, names, done, total, paths = _read_folder(spec, shape, resize, class_names, limit)
    elif os.path.isfile(spec):
        if not is_npz(spec):
            raise DataError('%s: not an .npz (expected %s)' % (spec, SPEC_FORMS))
        arrays = read_npz(spec, ('x', 'y', 'test_x', 'test_y'))
        key = 'x' if 'x' in arrays else 'test_x'
        if key not in arrays:
            raise DataError('%s: the .npz has neither x nor test_x' % spec)
        label_key = 'y' if key == 'x' else 'test_y'
        x, y = arrays[key], arrays.get(label_key)
        keys = (key,) if y is None else (key, label_key)
    else:
        raise DataError('%s: no such file or folder (expected %s)' % (spec, SPEC_FORMS))
    if x.dtype != np.uint8 or x.ndim not in (3, 4) or len(x) == 0:
        raise DataError('%s: expected uint8 images (N, H, W, C), got %s %s' % (spec, x.dtype, x.shape))
    if x.ndim == 3:
        x = x[..., None]
    check_channels(x.shape[-1], '%s: images' % spec, x.shape)
    if y is not None and len(y) != len(x):
        raise DataError('%s: %d labels for %d images' % (spec, len(y), len(x)))
    total = len(x) if total is None else total
    if limit:
        x, y = x[:limit], None if y is None else y[:limit]
    if shape:
        if resize and x.shape[1:3] != tuple(shape[:2]):
            done.append('%d resized and centre-cropped to %dx%d' % (len(x), shape[0], shape[1]))
            x = folders.fit_array(x, shape[:2])
        try:
            x, fitted = fit_images(x, shape)
        except DataError as e:
            raise e.within('%s: ' % spec) from None
        done += fitted
    return ImageSet(x, y, keys, done, names, total, paths)


def read_images(spec, data_dir=None, verbose=False):
    """A set of uint8 images (N, H, W, C), its labels (or None) and the .npz keys it was read
    from, as they are: read_set without a model's shape."""
    found = read_set(spec, data_dir, verbose)
    return found.images, found.labels, found.keys


def fit_images(images, shape):
    """Images made to the model's (H, W, C): smaller ones zero-padded in the centre, larger
    ones centre-cropped, grayscale repeated to 3 channels. Returns (images, what was done:
    a list of phrases, empty when nothing)."""
    H, W, C = shape
    done = []
    if images.shape[-1] != C:
        if images.shape[-1] != 1:
            raise DataError('images of %d channels cannot be fitted to %d' % (images.shape[-1], C))
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
