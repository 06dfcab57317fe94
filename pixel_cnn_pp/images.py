"""Images as the official code sees them and the files they come from or go to: the
uint8 <-> [-1, 1] convention (make_feed_dict's scaling), the sample grid (plotting.img_tile),
PNG output, and reading image sets from a SPEC (an .npz, a folder of image files,
tfds:NAME[:SPLIT]: read_set) and fitting them to a model's shape.

A folder is read as train.py reads it (folders.py): nothing is decoded that should not be,
and a file whose header announces more than MAX_PIXELS pixels, one that is not an image,
and a broken or truncated one are each skipped with one warning line naming it; RGBA (and
gray + alpha) lose their alpha channel, 16-bit PNGs are scaled to 8 bits, and grayscale
images in a folder that also has color ones are repeated to 3 channels, each said in one
warning line."""

import os
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import files, folders
from pixel_cnn_pp.config import check_channels
from pixel_cnn_pp.datafiles import DataError, is_npz, read_npz


def scale(x):
    """uint8 [0, 255] -> float32 [-1, 1], as the official make_feed_dict."""
    return (tf.cast(x, tf.float32) - 127.5) / 127.5


def to_uint8(x):
    """[-1, 1] floats -> uint8 pixel values (nearest bin): the inverse of scale."""
    return tf.cast(tf.round(tf.clip_by_value(x, -1., 1.) * 127.5 + 127.5), tf.uint8)


def tile(images, border=255, cols=None):
    """uint8 images on a grid with 1-pixel borders (official img_tile): `cols` per row, or
    the first 100 on a square grid."""
    images = np.asarray(images)
    if cols is None:
        images = images[:100]
        cols = int(np.ceil(np.sqrt(len(images))))
    n, H, W, C = images.shape
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * (H + 1) + 1, cols * (W + 1) + 1, C), border, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        grid[1 + r * (H + 1):1 + r * (H + 1) + H, 1 + c * (W + 1):1 + c * (W + 1) + W] = img
    return grid


def write_png(path, image):
    """One uint8 (H, W, C) image as a PNG file (atomically)."""
    files.write_bytes(path, tf.io.encode_png(image).numpy())


def write_samples(images, prefix):
    """prefix.png (a tiled grid) and prefix.npz (`samples`: uint8 NHWC)."""
    write_png(prefix + '.png', tile(images))
    files.write_atomically(prefix + '.npz', lambda f: np.savez(f, samples=np.asarray(images)))


def _phrases(notes):
    """Prints one warning line per phrase of notes ({phrase: [paths]}): the file, or how
    many and the first."""
    for phrase, which in notes.items():
        if which:
            print('warning: %s: %s' % (phrase, which[0] if len(which) == 1 else
                                       '%d images (the first: %s)' % (len(which), which[0])))


def skipped(unreadable, limit=10):
    """Prints the files scan found unreadable, one warning line each (the first `limit`,
    then how many more)."""
    for path, why in unreadable[:limit]:
        print('warning: skipped %s: %s' % (path, why))
    if len(unreadable) > limit:
        print('warning: skipped %d more unreadable files' % (len(unreadable) - limit))


def conversions(infos, paths, channels):
    """{phrase: [paths]} of what decoding to `channels` does to the files (folders.scan's
    infos): alpha dropped, 16 bits scaled to 8, gray repeated to RGB."""
    color = any(info.channels >= 3 for info in infos)
    gray = 'grayscale repeated to 3 channels (%s)' % ('others are in color' if color else "the model's are")
    notes = {'alpha channel dropped (RGBA or gray + alpha)': [], '16-bit PNG scaled to 8 bits': [], gray: []}
    for info, path in zip(infos, paths):
        if info.channels in (2, 4):
            notes['alpha channel dropped (RGBA or gray + alpha)'].append(path)
        if info.depth == 16:
            notes['16-bit PNG scaled to 8 bits'].append(path)
        if channels == 3 and info.channels in (1, 2):
            notes[gray].append(path)
    return {k: v for k, v in notes.items() if v}


def set_channels(infos, paths, channels=None):
    """The channels a set of files is decoded to: `channels` (a model's), or 3 if any file
    is in color, else 1. A color file for a 1-channel model is a DataError naming it."""
    color = next((p for info, p in zip(infos, paths) if info.channels >= 3), None)
    if channels == 1 and color:
        raise DataError('%s is in color, and the model\'s images are grayscale (1 channel)' % color)
    return channels or (3 if color else 1)


def odd_size(infos, paths):
    """(path, (height, width)) of the first file not of the first file's size, or None."""
    first = (infos[0].height, infos[0].width)
    return next(((p, (i.height, i.width)) for i, p in zip(infos, paths) if (i.height, i.width) != first), None)


class ImageSet(NamedTuple):
    """A set of images read from a SPEC (read_set)."""
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: Optional[np.ndarray]  # (N,) integers, or None
    keys: tuple  # the .npz keys read (('x', 'y'), ('test_x',), ...); () for a folder or tfds
    done: list  # what was done to fit them to the model (phrases), empty when nothing
    class_names: Optional[tuple]  # of a folder with class subfolders
    total: int  # images in the set (more than images holds when a limit cut it)


# Where else a set's images come from (the other forms of a SPEC).
IMAGES_ROUTE = 'pass the images as an .npz or a folder of image files'
SPEC_FORMS = 'an .npz file, a folder of images, or tfds:NAME[:SPLIT]'


def _read_tfds(spec, data_dir, verbose):
    """The images and labels (or None) of tfds:NAME[:SPLIT] (the test split if none), as
    data.read_tfds reads it (CIFAR-10's python batches if data_dir holds them, else the
    tensorflow-datasets copy prepared in data_dir or downloaded there)."""
    from pixel_cnn_pp import data  # here: data.py imports this module (scale)
    parts = spec.split(':', 2)  # a split may have colons: train[:10%]
    if not all(parts[1:]):
        raise DataError('%s: expected tfds:NAME[:SPLIT], e.g. tfds:svhn_cropped:test' % spec)
    try:
        [(x, y)] = data.read_tfds(parts[1], [parts[2] if len(parts) == 3 else 'test'], data_dir,
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
    skipped(scanned.unreadable)
    keep = [k for k, info in enumerate(scanned.infos) if info is not None]
    if not keep:
        raise DataError('%s: a folder with no readable image files (%d unreadable)' % (root, len(paths)))
    infos, paths = [scanned.infos[k] for k in keep], [paths[k] for k in keep]
    labels = None if found.labels is None else found.labels[keep]
    channels = set_channels(infos, paths, shape[2] if shape else None)
    _phrases(conversions(infos, paths, channels))
    odd = odd_size(infos, paths)
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
    return x, labels, found.class_names, done, len(found.paths)


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
    keys, names, done, total = (), None, [], None
    if spec.startswith('tfds:'):
        x, y = _read_tfds(spec, data_dir, verbose)
    elif os.path.isdir(spec):
        x, y, names, done, total = _read_folder(spec, shape, resize, class_names, limit)
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
    check_channels(x.shape[-1], '%s: images' % spec, x.shape, error=DataError)
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
    return ImageSet(x, y, keys, done, names, total)


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
