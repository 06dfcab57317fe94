"""Images as the official code sees them and the files they come from or go to: the
uint8 <-> [-1, 1] convention (make_feed_dict's scaling), the sample grid (plotting.img_tile),
PNG output, and reading image sets (an .npz, a folder of PNG/JPEG files,
tfds:NAME[:SPLIT]) and fitting them to a model's shape.

Reading a folder never decodes what it should not: a file whose header announces more
than MAX_PIXELS pixels, one that is not a PNG or JPEG, and a broken or truncated one are
each skipped with one warning line naming it; RGBA (and gray + alpha) lose their alpha
channel, 16-bit PNGs are scaled to 8 bits, and grayscale images in a folder that also has
color ones are repeated to 3 channels, each said in one warning line."""

import os
import struct
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import files
from pixel_cnn_pp.config import check_channels
from pixel_cnn_pp.datafiles import DataError, is_npz


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


IMAGE_FILES = ('.png', '.jpg', '.jpeg')
MAX_PIXELS = 64 * 10 ** 6  # a larger header is refused before decoding (a decompression bomb)
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
JPEG_SIGNATURE = b'\xff\xd8\xff'


def header(data):
    """(kind 'png' or 'jpeg', height, width, bit depth) from a file's first bytes, without
    decoding it: the PNG IHDR chunk, the JPEG frame header (SOF marker; None for its sizes
    if the bytes end before it); None if the bytes are neither."""
    if data[:8] == PNG_SIGNATURE and data[12:16] == b'IHDR' and len(data) >= 25:
        width, height, depth = struct.unpack('>IIB', data[16:25])
        return 'png', height, width, depth
    if data[:3] != JPEG_SIGNATURE:
        return None
    i = 2
    while i + 9 <= len(data):  # segments: FF marker, 2-byte length, payload
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            depth, height, width = struct.unpack('>BHH', data[i + 4:i + 9])
            return 'jpeg', height, width, depth
        i += 2 + struct.unpack('>H', data[i + 2:i + 4])[0]
    return 'jpeg', None, None, None


def _decode(data):
    """(uint8 (H, W, C) image with C in 1 or 3, what was converted: a list of phrases) of a
    PNG or JPEG file's bytes, or a DataError saying why it is not read."""
    head = header(data)
    if head is None:
        raise DataError('not a PNG or JPEG file')
    kind, height, width, depth = head
    if height is None:
        raise DataError('a broken or truncated JPEG (no frame header)')
    if height * width > MAX_PIXELS:
        raise DataError('its header says %dx%d pixels, more than the %d megapixels read (not decoded)'
                        % (width, height, MAX_PIXELS // 10 ** 6))
    if not height or not width:
        raise DataError('its header says %dx%d pixels' % (width, height))
    try:
        if kind == 'png':
            image = tf.io.decode_png(data, dtype=tf.uint16 if depth == 16 else tf.uint8).numpy()
        else:
            image = tf.io.decode_jpeg(data).numpy()
    except (tf.errors.OpError, ValueError) as e:
        why = getattr(e, 'message', str(e)).split('}} ')[-1].split(' [Op:')[0].strip()
        raise DataError('a broken or truncated %s (%s)' % (kind.upper(), why.splitlines()[0] if why else
                                                           type(e).__name__)) from None
    done = []
    if image.dtype == np.uint16:  # nearest of the 256 levels: v * 255 / 65535, rounded
        image = ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        done.append('16-bit PNG scaled to 8 bits')
    if image.shape[-1] in (2, 4):
        if (image[..., -1] < 255).any():
            done.append('transparent pixels: alpha dropped')
        image = image[..., :-1]
    return image, done


def _read_folder(folder):
    """The PNG/JPEG images of a folder (sorted by file name), read as the module docstring
    says; files of other extensions are ignored."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_FILES))
    images, paths, notes = [], [], {}
    for name in names:
        path = os.path.join(folder, name)
        try:
            with open(path, 'rb') as f:
                image, done = _decode(f.read())
        except OSError as e:
            print('warning: skipped %s: %s' % (path, e.strerror or e))
            continue
        except DataError as e:
            print('warning: skipped %s: %s' % (path, e))
            continue
        for phrase in done:
            notes.setdefault(phrase, []).append(path)
        images.append(image)
        paths.append(path)
    if not images:
        raise DataError('%s: a folder with no readable PNG or JPEG images' % folder)
    if len({image.shape[-1] for image in images}) > 1:
        for k, image in enumerate(images):
            if image.shape[-1] == 1:
                images[k] = np.repeat(image, 3, axis=-1)
                notes.setdefault('grayscale repeated to 3 channels (others are in color)', []).append(paths[k])
    for phrase, which in notes.items():
        print('warning: %s: %s' % (phrase, which[0] if len(which) == 1 else
                                   '%d images (the first: %s)' % (len(which), which[0])))
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise DataError('%s: the images have different shapes %s' % (folder, sorted(shapes)[:3]))
    return np.stack(images)


# Where else a set's images come from (the other forms of a SPEC).
IMAGES_ROUTE = 'pass the images as an .npz or a folder of PNG/JPEG files'
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
        raise DataError('%s: %s' % (spec, e)) from None
    return x, y


def read_images(spec, data_dir=None, verbose=False):
    """A set of uint8 images (N, H, W, C), its labels (or None) and the .npz keys it was read
    from (('x', 'y'), ('test_x',), ...; () for a folder or tfds) from a SPEC: an .npz (key
    x, else test_x; labels y, else test_y), a folder of PNG/JPEG files (sorted by name, read
    as the module docstring says), or tfds:NAME[:SPLIT] (_read_tfds; verbose:
    tensorflow-datasets' progress bars and warnings). Errors (DataError) name the SPEC or
    the file."""
    keys = ()
    if spec.startswith('tfds:'):
        x, y = _read_tfds(spec, data_dir, verbose)
    elif os.path.isdir(spec):
        x, y = _read_folder(spec), None
    elif os.path.isfile(spec):
        if not is_npz(spec):
            raise DataError('%s: not an .npz (expected %s)' % (spec, SPEC_FORMS))
        try:
            with np.load(spec, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files if k in ('x', 'y', 'test_x', 'test_y')}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError('%s: not a readable .npz (%s)' % (spec, e)) from None
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
    return x, y, keys


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
