"""Downsampled ImageNet 32x32 from the files people have, as tensorflow-datasets' source
(image-net.org/small/) is gone: the original of van den Oord et al. 2016 (one PNG per image
in train_32x32.tar and valid_32x32.tar, or their extracted folders; no labels), or Imagenet32
of Chrabaszcz et al. 2017 (npz or pickle batches; 1,000 classes). The first read converts it
into a uint8 cache in data_dir, which later runs memory-map."""

import fcntl
import json
import os
import pathlib
import shutil
import tarfile
import time
import zipfile
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import folders
from pixel_cnn_pp.datafiles import DataError, load_pickle
from pixel_cnn_pp.progress import bar as progress_bar

ORIGINAL, IMAGENET32 = 'original', 'imagenet32'
SPLITS = ('train_32x32', 'valid_32x32')
FULL_SIZES = (1281149, 49999)
CACHE = 'imagenet_32x32_cache'
MANIFEST = 'manifest.json'
CHUNK = 4096  # images decoded or converted at a time

MISSING = ('expected the original downsampled ImageNet 32x32 (train_32x32.tar and valid_32x32.tar, '
           'or their extracted folders; van den Oord et al. 2016, mirrored e.g. on Academic '
           'Torrents) or Imagenet32 (train_data_batch_1..10 and val_data, from '
           'Imagenet32_train_npz.zip and Imagenet32_val_npz.zip or their pickle versions; '
           'Chrabaszcz et al. 2017, image-net.org after login), in {data_dir:name} or a folder in it. '
           'Images of your own: {data_set=_folder} {data_dir=_dir}.')
OWN_IMAGES = {'_folder': 'folder', '_dir': 'DIR'}  # MISSING's values


class Source(NamedTuple):
    """The files of one form of the data set in a data_dir."""
    form: str  # ORIGINAL or IMAGENET32
    train: list  # ORIGINAL: [the tar archive or folder]; IMAGENET32: the batch files
    test: list
    description: str


def _folders(data_dir):
    """Where the files may be: data_dir, then its subfolders."""
    try:
        return [data_dir] + sorted(e.path for e in os.scandir(data_dir) if e.is_dir())
    except OSError:
        return []


def _batch_file(folders, name):
    """The first name.npz or name (a pickle) in folders, or None."""
    for folder in folders:
        for path in (os.path.join(folder, name + '.npz'), os.path.join(folder, name)):
            if os.path.isfile(path):
                return path
    return None


def _locate(data_dir):
    """The Source in data_dir, or None. The original comes first, as the papers' numbers are
    on it; of an archive and its extracted folder, the archive (a folder may be half
    extracted)."""
    folders = _folders(data_dir)
    for root in folders:
        found = []
        for split in SPLITS:
            tar, folder = os.path.join(root, split + '.tar'), os.path.join(root, split)
            found.append(tar if os.path.isfile(tar) else folder if os.path.isdir(folder) else None)
        if all(found):
            return Source(ORIGINAL, found[:1], found[1:],
                          'the original downsampled ImageNet 32x32 (van den Oord et al. 2016, no '
                          'labels): %s and %s' % tuple(found))
    first, test = _batch_file(folders, 'train_data_batch_1'), _batch_file(folders, 'val_data')
    if not (first and test):
        return None
    folder, ext = os.path.dirname(first), '.npz' if first.endswith('.npz') else ''
    train = [first]
    while os.path.isfile(os.path.join(folder, 'train_data_batch_%d%s' % (len(train) + 1, ext))):
        train.append(os.path.join(folder, 'train_data_batch_%d%s' % (len(train) + 1, ext)))
    batches = 'train_data_batch_1' + ('..%d' % len(train) if len(train) > 1 else '') + ext
    return Source(IMAGENET32, train, [test],
                  'Imagenet32 (Chrabaszcz et al. 2017, 1000 classes): %s (%d of the 10 training '
                  'batches) in %s, and %s' % (batches, len(train), folder, test))


def find(data_dir):
    """Which form of downsampled ImageNet data_dir holds (a description), or None."""
    src = _locate(data_dir)
    return src and src.description


def has_labels(data_dir):
    """Whether the form in data_dir has labels (Imagenet32 does, the original not)."""
    src = _locate(data_dir)
    return src is not None and src.form == IMAGENET32


def _read_batch(path):
    """One Imagenet32 batch: images (N, 32, 32, 3) uint8 (a view of the channel-first rows)
    and labels (N,) int32, 0-based."""
    try:
        if path.endswith('.npz'):
            with np.load(path) as f:
                x, y = f['data'], f['labels']
        else:
            d = load_pickle(path)  # refuses anything but arrays, lists, dicts, str, numbers
            x, y = np.asarray(d['data']), np.asarray(d['labels'])
    except DataError:
        raise
    except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as e:
        raise DataError('%s: not a readable Imagenet32 batch with data and labels (%s: %s)'
                         % (path, type(e).__name__, e)) from None
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DataError('%s: expected data of uint8 (N, 3072), got %s %s' % (path, x.dtype, x.shape))
    integers = y.dtype.kind in 'iu' and y.size
    if y.shape != (len(x),) or not integers or not 1 <= y.min() <= y.max() <= 1000:
        raise DataError('%s: expected %d labels in 1..1000, got %s %s%s' % (
            path, len(x), y.dtype, y.shape, ' in %d..%d' % (y.min(), y.max()) if integers else ''))
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), (y - 1).astype(np.int32)


def _count(path):
    """How many images an Imagenet32 batch holds (a pickle can only be counted by reading it)."""
    if path.endswith('.npz'):
        try:
            with np.load(path) as f:
                return len(f['labels'])
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
            pass  # _read_batch says what is wrong
    return len(_read_batch(path)[1])


def _copy_batch(path, x, y, bar):
    """An Imagenet32 batch file into x, y (its rows of the split), one batch in memory at a time."""
    images, labels = _read_batch(path)
    if len(labels) != len(y):
        raise DataError('%s changed while being read' % path)
    y[:] = labels
    for i in range(0, len(images), CHUNK):
        x[i:i + CHUNK] = images[i:i + CHUNK]
        bar.add(len(images[i:i + CHUNK]))


def _png_index(path):
    """The PNG files of a tar archive or folder, in stored order: their names and how to read
    each (an archive's (size, offset), a folder's file path)."""
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith('.png'))
        return names, [os.path.join(path, n) for n in names]
    names, where = [], []
    try:
        with tarfile.open(path, 'r:') as tar:
            while (m := tar.next()) is not None:
                if m.isfile() and m.name.lower().endswith('.png'):
                    names.append(m.name)
                    where.append((m.size, m.offset_data))
                tar.members = []  # it keeps every member read: 0.5 GB for the training set
    except (OSError, tarfile.TarError) as e:
        raise DataError('%s: not a readable uncompressed tar archive (%s)' % (path, e)) from None
    if not names:
        raise DataError('%s: no PNG images in it' % path)
    return names, where


def _not_32x32_png(png):
    """Why the bytes png are not a 32x32 PNG file (from its header), or None."""
    head = folders.header(png)
    if head is None or head[0] != 'png':
        return 'not a PNG'
    return None if head[1:3] == (32, 32) else '%dx%d' % (head[2], head[1])


@tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
def _decode(pngs):
    """32x32 PNGs -> (N, 32, 32, 3) uint8; grayscale is repeated to RGB (as
    tf.image.grayscale_to_rgb), alpha dropped."""
    return tf.map_fn(lambda png: tf.io.decode_png(png, channels=3), pngs, parallel_iterations=4,
                     fn_output_signature=tf.TensorSpec([32, 32, 3], tf.uint8))


def _read_pngs(path, names, where, x, bar):
    """Decodes the PNGs of a tar archive or folder (_png_index) into x, in sorted name order."""
    rank = np.empty(len(names), np.int64)  # reading in stored order, writing in sorted order
    rank[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
    fd = None if os.path.isdir(path) else os.open(path, os.O_RDONLY)
    try:
        for start in range(0, len(names), CHUNK):
            pngs = []
            for i in range(start, min(start + CHUNK, len(names))):
                png = pathlib.Path(where[i]).read_bytes() if fd is None else os.pread(fd, *where[i])
                why = _not_32x32_png(png)
                if why:
                    raise DataError('%s: %s is %s, expected a 32x32 PNG' % (path, names[i], why))
                pngs.append(png)
            try:
                x[rank[start:start + len(pngs)]] = _decode(tf.constant(pngs)).numpy()
            except tf.errors.InvalidArgumentError:  # name the culprit
                for i, png in enumerate(pngs, start):
                    try:
                        tf.io.decode_png(png)
                    except tf.errors.InvalidArgumentError as e:
                        raise DataError('%s: %s is a broken PNG (%s)' % (
                            path, names[i], e.message.split('}} ')[-1])) from None
                raise
            bar.add(len(pngs))
    finally:
        if fd is not None:
            os.close(fd)


def _convert(src, alloc, progress):
    """The arrays of src (train_x, test_x and, for Imagenet32, train_y, test_y), written into
    those alloc(name, shape, dtype) gives."""
    start = time.time()
    arrays = {}
    if src.form == ORIGINAL:
        index = {'train': _png_index(src.train[0]), 'test': _png_index(src.test[0])}
        bar = progress_bar(sum(len(names) for names, _ in index.values()), progress, 'image')
        for split, (path,) in (('train', src.train), ('test', src.test)):
            names, where = index[split]
            arrays[split + '_x'] = alloc(split + '_x', (len(names), 32, 32, 3), np.uint8)
            _read_pngs(path, names, where, arrays[split + '_x'], bar)
    else:
        counts = {'train': [_count(p) for p in src.train], 'test': [_count(p) for p in src.test]}
        bar = progress_bar(sum(map(sum, counts.values())), progress, 'image')
        for split, paths in (('train', src.train), ('test', src.test)):
            n = sum(counts[split])
            x, y = alloc(split + '_x', (n, 32, 32, 3), np.uint8), alloc(split + '_y', (n,), np.int32)
            done = 0
            for path, count in zip(paths, counts[split]):
                _copy_batch(path, x[done:done + count], y[done:done + count], bar)
                done += count
            arrays[split + '_x'], arrays[split + '_y'] = x, y
    seconds = time.time() - start
    n = (len(arrays['train_x']), len(arrays['test_x']))
    took = '%.1f s' % seconds if seconds < 60 else '%d min %02d s' % divmod(round(seconds), 60)
    partial = src.form == ORIGINAL and n != FULL_SIZES
    print('converted %d training and %d test images in %s%s' % (
        n + (took, ' (the full data set has %d and %d)' % FULL_SIZES if partial else '')))
    return arrays


def _stat(path):
    """[size, modification time] of a file; of a folder, [its number of files, their total
    size, the latest modification time of it and them] (a few seconds for 1.28M files)."""
    if not os.path.isdir(path):
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    n, size, mtime = 0, 0, os.stat(path).st_mtime_ns
    with os.scandir(path) as entries:
        for e in entries:
            st = e.stat()
            n, size, mtime = n + 1, size + st.st_size, max(mtime, st.st_mtime_ns)
    return [n, size, mtime]


def _fingerprint(src, data_dir):
    """What the cache records of its source: the form and, of each file or folder, its path
    relative to data_dir (so that data_dir can move) and _stat."""
    return {'form': src.form, 'files': [[os.path.relpath(p, data_dir)] + _stat(p) for p in src.train + src.test]}


def _open_cache(cache, fingerprint):
    """(The cache's arrays, memory-mapped, None) if it is complete and made from
    `fingerprint`, else (None, why not); why is None if there is no cache."""
    if not os.path.isdir(cache):
        return None, None
    try:
        with open(os.path.join(cache, MANIFEST)) as f:
            manifest = json.load(f)
        source, recorded = manifest['source'], [list(f) for f in manifest['source']['files']]
        specs = {name: (list(a['shape']), a['dtype']) for name, a in manifest['arrays'].items()}
    except FileNotFoundError:
        return None, 'it has no %s' % MANIFEST
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return None, 'its %s is unreadable (%s: %s)' % (MANIFEST, type(e).__name__, e)
    if source != fingerprint:
        current = fingerprint['files']
        differ = [f[0] for f in current if f not in recorded] + [f[0] for f in recorded if f not in current]
        return None, 'it was made from other files, or they changed since (%s)' % ', '.join(
            sorted(set(map(str, differ))))
    if not {'train_x', 'test_x'} <= set(specs):
        return None, 'its %s lists no train_x and test_x' % MANIFEST
    arrays = {}
    for name, (shape, dtype) in specs.items():
        path = os.path.join(cache, name + '.npy')
        try:
            a = np.load(path, mmap_mode='r')
        except FileNotFoundError:
            return None, '%s.npy is missing' % name
        except (OSError, ValueError, EOFError) as e:
            return None, '%s.npy is truncated or unreadable (%s)' % (name, e)
        if (list(a.shape), str(a.dtype)) != (shape, dtype):
            return None, '%s.npy is %s %s, not %s %s as the manifest says' % (name, a.dtype, a.shape, dtype, shape)
        if os.path.getsize(path) != a.offset + a.nbytes:
            return None, '%s.npy has %d bytes, not the %d its header says' % (
                name, os.path.getsize(path), a.offset + a.nbytes)
        arrays[name] = a
    return arrays, None


def _build(cache, src, fingerprint, progress):
    """Converts src into the cache folder: into cache.partial first, renamed into place when
    complete, so that a kill at any moment leaves no cache or a complete one."""
    tmp = cache + '.partial'
    shutil.rmtree(tmp, ignore_errors=True)  # what a killed conversion left
    os.makedirs(tmp)
    try:
        arrays = _convert(src, lambda name, shape, dtype: np.lib.format.open_memmap(
            os.path.join(tmp, name + '.npy'), 'w+', dtype, shape), progress)
        for a in arrays.values():
            a.flush()
        manifest = {'source': fingerprint, 'description': src.description,
                    'arrays': {k: {'shape': list(a.shape), 'dtype': str(a.dtype)} for k, a in arrays.items()}}
        with open(os.path.join(tmp, MANIFEST), 'w') as f:
            json.dump(manifest, f, indent=1)
        for name in os.listdir(tmp):  # on disk before the rename makes them the cache
            fd = os.open(os.path.join(tmp, name), os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        shutil.rmtree(cache, ignore_errors=True)
        os.rename(tmp, cache)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _cached(cache, src, fingerprint, progress):
    """The arrays of the cache, built (or rebuilt) first if needed, one process at a time;
    None if data_dir is not writable."""
    try:
        lock = os.open(cache + '.lock', os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        print('warning: cannot write the cache (%s); converting into memory, as every run will' % e)
        return None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print('waiting for another process that is converting it into the cache')
            fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel however that process ends
        arrays, why = _open_cache(cache, fingerprint)
        if arrays is None:
            if why:
                print('rebuilding the cache, as %s' % why)
            else:
                print('converting it into the cache (once: later runs read the cache)%s'
                      % (', after an interrupted conversion' if os.path.isdir(cache + '.partial') else ''))
            _build(cache, src, fingerprint, progress)
            arrays, why = _open_cache(cache, fingerprint)
            if arrays is None:
                raise DataError('%s: the cache just built is unusable, as %s' % (cache, why))
        return arrays
    finally:
        os.close(lock)


def load(data_dir, progress=True):
    """(train_x, train_y, test_x, test_y, num_labels) of the downsampled ImageNet in data_dir:
    images uint8 (N, 32, 32, 3) in sorted file-name order (the original) or batch order
    (Imagenet32), memory-mapped from the cache; labels int32 0..999 (Imagenet32) or None.
    The cache is built on first use, and rebuilt if it is incomplete or of other files;
    without write access to data_dir, the data is converted into memory instead."""
    src = _locate(data_dir)
    if src is None:
        raise DataError('{data_set}: nothing in {data_dir}; ' + MISSING, data_dir=data_dir, data_set='imagenet',
                        **OWN_IMAGES)
    cache = os.path.join(data_dir, CACHE)
    print('ImageNet 32x32: %s; cache %s' % (src.description, cache))
    fingerprint = _fingerprint(src, data_dir)
    arrays, _ = _open_cache(cache, fingerprint)
    if arrays is None:
        arrays = (_cached(cache, src, fingerprint, progress)
                  or _convert(src, lambda name, shape, dtype: np.empty(shape, dtype), progress))
    return (arrays['train_x'], arrays.get('train_y'), arrays['test_x'], arrays.get('test_y'),
            1000 if src.form == IMAGENET32 else 0)
