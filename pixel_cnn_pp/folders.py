"""Folders of image files, the one way every script reads them (train.py through data.py,
the others through data.read_set): which files a folder holds and their classes
(`listing`), what each file is without decoding it (`probe`, `scan`), and the images as a
lazy uint8 array that decodes them in a tf.data pipeline (`ImageFiles`).

A folder is flat (its images) or holds one subfolder per class (the images anywhere below
each), as keras.utils.image_dataset_from_directory and torchvision's ImageFolder read them:
the classes are the subfolders' names, sorted, label k the k-th. Files are taken in sorted
order of their path; hidden files and folders (.name) and other extensions are ignored.
PNG (8 or 16 bits; gray, gray + alpha, RGB, RGBA, palette), JPEG (gray or color), BMP (24 or
32 bits, or 8-bit gray) and GIF (its first frame) are read through tf.io.

What a file is comes from its header and its last bytes, never from decoding it: its kind,
size and channels, or why it cannot be read (empty, not an image, a header announcing more
than MAX_PIXELS pixels, a PNG, JPEG, GIF or BMP cut short, a BMP TensorFlow decodes wrong).
Decoding then converts each image to the set's channels (alpha dropped, gray repeated to
RGB), 16-bit PNGs to the nearest of 256 levels, and fits it to the set's size when asked
(`fit_image`: resized then centre-cropped, or padded/cropped)."""

import concurrent.futures
import os
import struct
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from pixel_cnn_pp.datafiles import DataError

IMAGE_FILES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')
MAX_PIXELS = 64 * 10 ** 6  # a larger header is refused before decoding (a decompression bomb)
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
JPEG_SIGNATURE = b'\xff\xd8\xff'
PNG_END = b'IEND\xaeB`\x82'  # the IEND chunk's type and CRC: a PNG's last 8 bytes
HEAD_BYTES = 1 << 16  # what is read of a file first: every header but a JPEG's after a large EXIF block
TAIL_BYTES = 4096
PARALLEL = max(4, 2 * (os.cpu_count() or 1))  # files read and decoded at once


# ---------------------------------------------------------------------- one file, undecoded

def header(data):
    """(kind 'png' or 'jpeg', height, width, bit depth) from a file's first bytes, without
    decoding it: the PNG IHDR chunk, the JPEG frame header (SOF marker; None for its sizes
    if the bytes end before it); None if the bytes are neither."""
    if data[:8] == PNG_SIGNATURE and data[12:16] == b'IHDR' and len(data) >= 25:
        width, height, depth = struct.unpack('>IIB', data[16:25])
        return 'png', height, width, depth
    sof = _jpeg_frame(data)
    if sof is None:
        return None
    return ('jpeg',) + sof[:3] if sof else ('jpeg', None, None, None)


def _jpeg_frame(data):
    """(height, width, precision, components) of a JPEG's frame header; () if the bytes end
    before it; None if the bytes are not a JPEG's."""
    if data[:3] != JPEG_SIGNATURE:
        return None
    i = 2
    while i + 10 <= len(data):  # segments: FF marker, 2-byte length, payload
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            depth, height, width, components = struct.unpack('>BHHB', data[i + 4:i + 10])
            return height, width, depth, components
        i += 2 + struct.unpack('>H', data[i + 2:i + 4])[0]
    return ()


class Info(NamedTuple):
    """What a file's header says: kind ('png', 'jpeg', 'bmp', 'gif'), its size, its channels
    (1 gray, 2 gray + alpha, 3 color, 4 color + alpha) and bits per sample."""
    kind: str
    height: int
    width: int
    channels: int
    depth: int = 8


PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # by IHDR colour type (3: palette)


def probe(head, tail=b'', size=None):
    """The Info of an image file from its first bytes `head` and last bytes `tail` (of a file
    of `size` bytes; None: head is the whole file), or a DataError saying why it is not read
    (a plain reason, the caller names the file)."""
    size = len(head) if size is None else size
    tail = tail or head
    if not size:
        raise DataError('an empty file')
    if head[:8] == PNG_SIGNATURE:
        if head[12:16] != b'IHDR' or len(head) < 26:
            raise DataError('a broken PNG (no IHDR header)')
        width, height, depth, color = struct.unpack('>IIBB', head[16:26])
        if color not in PNG_CHANNELS:
            raise DataError('a broken PNG (colour type %d)' % color)
        info = Info('png', height, width, PNG_CHANNELS[color], depth)
        ends = PNG_END in tail
    elif head[:3] == JPEG_SIGNATURE:
        frame = _jpeg_frame(head)
        if not frame:
            raise DataError('a broken or truncated JPEG (no frame header)')
        height, width, depth, components = frame
        info = Info('jpeg', height, width, 1 if components == 1 else 3, depth)
        ends = b'\xff\xd9' in tail  # the end-of-image marker (no FF D9 inside the coded data)
    elif head[:6] in (b'GIF87a', b'GIF89a') and len(head) >= 10:
        width, height = struct.unpack('<HH', head[6:10])
        info = Info('gif', height, width, 3)
        ends = b';' in tail[-16:]  # the trailer
    elif head[:2] == b'BM' and len(head) >= 54:
        info, ends = _bmp(head, size)
    else:
        raise DataError('not a PNG, JPEG, BMP or GIF file')
    if info.height * info.width > MAX_PIXELS:
        raise DataError('its header says %dx%d pixels, more than the %d megapixels read (not decoded)'
                        % (info.width, info.height, MAX_PIXELS // 10 ** 6))
    if not info.height or not info.width:
        raise DataError('its header says %dx%d pixels' % (info.width, info.height))
    if not ends:
        raise DataError('a truncated %s (its end is missing)' % info.kind.upper())
    return info


def _bmp(head, size):
    """(Info, whether the file holds all its pixel rows) of a BMP that TensorFlow decodes
    right: 24 or 32 bits uncompressed, or 8 bits with a gray palette (TensorFlow reads the
    8 bits as gray values, whatever the palette says)."""
    offset, dib = struct.unpack('<II', head[10:18])
    if dib < 40:
        raise DataError('an OS/2 BMP, which TensorFlow does not decode')
    width, height, _, bpp, compression = struct.unpack('<iiHHI', head[18:34])
    height = abs(height)  # negative: rows stored top-down
    if bpp not in (8, 24, 32) or compression not in (0, 3):
        raise DataError('a %d-bit%s BMP, which TensorFlow does not decode'
                        % (bpp, '' if compression in (0, 3) else ' compressed'))
    if bpp == 8:
        colors = struct.unpack('<I', head[46:50])[0] or 256
        palette = head[14 + dib:14 + dib + 4 * colors]
        gray = bytes(v for i in range(colors) for v in (i, i, i)) == bytes(
            b for k in range(0, len(palette), 4) for b in palette[k:k + 3])
        if len(palette) < 4 * colors or not gray:
            raise DataError('an 8-bit BMP with a colour palette, which TensorFlow decodes as gray values')
    info = Info('bmp', height, width, {8: 1, 24: 3, 32: 4}[bpp])
    return info, size >= offset + ((bpp * width + 31) // 32) * 4 * height


def read_info(path):
    """probe() of the file at path (its first HEAD_BYTES and last TAIL_BYTES; a JPEG whose
    frame header is further on: as far as it); OSError if it cannot be read."""
    with open(path, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEAD_BYTES)
        tail = b''
        if size > len(head):
            if head[:3] == JPEG_SIGNATURE and _jpeg_frame(head) == ():
                head += f.read()  # the frame header after large APP segments
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read()
    return probe(head, tail, size)


class Scanned(NamedTuple):
    """What `scan` found of files: the Info of each readable one (None for the others), and
    (path, why) of each unreadable one, in the files' order."""
    infos: list
    unreadable: list


def scan(paths):
    """read_info of every file, PARALLEL at a time (the headers only: about 30 microseconds
    a file)."""
    def one(path):
        try:
            return read_info(path), None
        except DataError as e:
            return None, str(e)
        except OSError as e:
            return None, e.strerror or str(e)
    with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
        found = list(pool.map(one, paths))
    return Scanned([info for info, _ in found], [(p, why) for p, (_, why) in zip(paths, found) if why])


# ---------------------------------------------------------------------- a folder's files

class Listing(NamedTuple):
    """The image files of a folder, sorted by path; their labels (the index of their class
    folder among class_names) and the class names, or None for a flat folder."""
    paths: list
    labels: Optional[np.ndarray]
    class_names: Optional[tuple]


def _visible(names):
    return sorted(n for n in names if not n.startswith('.'))


def _images_below(folder):
    """The image files anywhere below folder, sorted by path (hidden ones left out)."""
    found = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = _visible(dirs)
        found += [os.path.join(root, n) for n in _visible(names) if n.lower().endswith(IMAGE_FILES)]
    return sorted(found)


def listing(folder, class_names=None):
    """The Listing of a folder: flat (its image files) or one subfolder per class. Given
    class_names (the classes a model was trained on), a class folder's label is its name's
    index there, and a folder of another name is a DataError. A folder that holds both
    images and folders of images, none at all, or an empty class folder is a DataError
    naming it."""
    try:
        entries = _visible(os.listdir(folder))
    except OSError as e:
        raise DataError('%s: not a readable folder (%s)' % (folder, e.strerror or e)) from None
    files = [n for n in entries if n.lower().endswith(IMAGE_FILES) and os.path.isfile(os.path.join(folder, n))]
    classes = [n for n in entries if os.path.isdir(os.path.join(folder, n))]
    below = {name: _images_below(os.path.join(folder, name)) for name in classes}
    if files:
        if any(below.values()):
            raise DataError('%s holds both image files (%s) and folders of images (%s): a folder is flat, or has '
                            'one subfolder per class' % (folder, files[0], next(n for n in classes if below[n])))
        return Listing([os.path.join(folder, n) for n in files], None, None)
    if not any(below.values()):
        raise DataError('%s: a folder with no PNG, JPEG, BMP or GIF images' % folder)
    empty = [name for name in classes if not below[name]]
    if empty:
        raise DataError('%s: the class folder %s holds no images' % (folder, empty[0]))
    names = tuple(class_names) if class_names is not None else tuple(classes)
    unknown = [name for name in classes if name not in names]
    if unknown:
        raise DataError('%s: the class folder %s is not one of the model\'s classes (%s)' % (
            folder, unknown[0], ', '.join(names[:10]) + (', ...' if len(names) > 10 else '')))
    paths = [p for name in classes for p in below[name]]
    labels = np.concatenate([np.full(len(below[name]), names.index(name), np.int32) for name in classes])
    return Listing(paths, labels, names)


def splits(folder):
    """The training and test folders of a folder: (DIR/train, DIR/test) when it holds both,
    (DIR/train, None) when only a train folder, else (DIR, None); None for a test folder
    means a held-out split (data.hold_out)."""
    train, test = os.path.join(folder, 'train'), os.path.join(folder, 'test')
    if os.path.isdir(train):
        return train, test if os.path.isdir(test) else None
    return folder, None


# ---------------------------------------------------------------------- decoding

def decode(contents, channels, deep=False):
    """An image file's bytes (PNG, JPEG, BMP, GIF: its first frame) -> uint8 (H, W, channels):
    alpha dropped, gray repeated to RGB; deep (a 16-bit PNG, as scan says): its 16 bits to
    the nearest of 256 levels (v * 255 / 65535 rounded). A TensorFlow graph function."""
    def sixteen_bits():
        image = tf.io.decode_png(contents, channels=channels, dtype=tf.uint16)
        return tf.cast((tf.cast(image, tf.int32) * 255 + 32767) // 65535, tf.uint8)

    def eight_bits():  # gray: as the file has it (a BMP takes no channels=1), alpha dropped
        image = tf.io.decode_image(contents, channels=0 if channels == 1 else channels, expand_animations=False)
        return image[..., :1] if channels == 1 else image
    return tf.cond(deep, sixteen_bits, eight_bits)


def fit_image(image, size, method):
    """A uint8 image (h, w, C) fitted to size (H, W): method 'resize' scales it (bilinear,
    antialiased, aspect ratio kept) to the smallest size that covers (H, W), then crops the
    centre; 'pad' zero-pads or centre-crops it as it is (data.fit_images' rule). A
    TensorFlow graph function, the same for every image of every script."""
    H, W = size
    if method == 'pad':
        return tf.image.resize_with_crop_or_pad(image, H, W)
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    s = tf.maximum(H / h, W / w)
    nh = tf.maximum(tf.cast(tf.round(h * s), tf.int32), H)
    nw = tf.maximum(tf.cast(tf.round(w * s), tf.int32), W)

    def resized():
        r = tf.image.resize(tf.cast(image, tf.float32), tf.stack([nh, nw]), 'bilinear', antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(r), 0., 255.), tf.uint8)
    scaled = tf.cond(tf.logical_and(tf.equal(nh, shape[0]), tf.equal(nw, shape[1])), lambda: image, resized)
    return tf.image.crop_to_bounding_box(scaled, (nh - H) // 2, (nw - W) // 2, H, W)


_FIT_ARRAY = {}


def fit_array(images, size, method='resize', chunk=256):
    """fit_image of every image of a uint8 array (N, h, w, C), in chunks: the same numbers as
    a folder's pipeline gives its files."""
    H, W = size
    key = (method, H, W)
    if key not in _FIT_ARRAY:
        _FIT_ARRAY[key] = tf.function(lambda x: tf.map_fn(lambda i: fit_image(i, (H, W), method), x,
                                                          fn_output_signature=tf.uint8), autograph=False)
    if images.shape[1:3] == (H, W):
        return np.asarray(images)
    out = np.empty((len(images), H, W, images.shape[3]), np.uint8)
    for start in range(0, len(images), chunk):
        out[start:start + chunk] = _FIT_ARRAY[key](tf.constant(images[start:start + chunk])).numpy()
    return out


_NO_AUTOTUNE = tf.data.Options()  # see data._NO_AUTOTUNE
_NO_AUTOTUNE.autotune.enabled = False


class ImageFiles:
    """Image files as a read-only uint8 array (N, H, W, C) that holds none of their pixels:
    len(), shape, dtype and x[indices] (an int, a slice, an array of indices) as NumPy's,
    each image decoded (PARALLEL files at a time) when it is indexed; dataset(indices), the
    same as a tf.data pipeline (data._pipeline's). fit: None (every file is H x W, scan
    said so), 'resize' or 'pad' (fit_image, each file as it is decoded); deep: which files
    are 16-bit PNGs (decode)."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths, shape, fit=None, deep=None):
        self.paths, self.fit = list(paths), fit
        self.shape = (len(self.paths),) + tuple(shape)
        self.deep = np.zeros(len(self.paths), bool) if deep is None else np.asarray(deep, bool)
        self._paths = None

    def __len__(self):
        return len(self.paths)

    def __repr__(self):
        return 'ImageFiles(%d files, %s%s)' % (len(self), 'x'.join(map(str, self.shape[1:])),
                                               ', %s' % self.fit if self.fit else '')

    def _path_tensor(self):
        if self._paths is None:  # once, eagerly: each pipeline captures them, none copies them
            with tf.init_scope(), tf.device('/cpu:0'):
                self._paths = tf.constant(self.paths, tf.string), tf.constant(self.deep, tf.bool)
        return self._paths

    def image(self, i):
        """Image i of the files (a graph function of a scalar int64 index)."""
        H, W, C = self.shape[1:]
        paths, deep = self._path_tensor()
        image = decode(tf.io.read_file(tf.gather(paths, i)), C, tf.gather(deep, i))
        if self.fit:
            image = fit_image(image, (H, W), self.fit)
        return tf.ensure_shape(image, (H, W, C))

    def dataset(self, indices):
        """A tf.data.Dataset of the images of `indices` (a 1-D int array), in that order."""
        self._path_tensor()
        ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
        return ds.map(self.image, num_parallel_calls=PARALLEL).with_options(_NO_AUTOTUNE)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        indices = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key)
        if indices.ndim != 1 or (len(indices) and indices.dtype.kind not in 'iu'):
            raise TypeError('ImageFiles takes an int, a slice or a 1-D array of indices, got %r' % (key,))
        out = np.empty((len(indices),) + self.shape[1:], np.uint8)
        try:
            for k, image in enumerate(self.dataset(indices % max(len(self), 1)).batch(256)):
                out[256 * k:256 * k + len(image)] = image.numpy()
        except tf.errors.OpError:
            raise self.culprit(indices) from None
        return out

    def culprit(self, indices):
        """The DataError naming the first file of `indices` that does not decode (what a
        pipeline's error does not say); a plain DataError if each decodes alone."""
        for i in indices:
            try:
                self.image(tf.constant(int(i), tf.int64))
            except (tf.errors.OpError, ValueError) as e:
                why = getattr(e, 'message', str(e)).split('}} ')[-1].split(' [Op:')[0].strip()
                return DataError('%s: not a readable image (%s)' % (self.paths[i], why.splitlines()[0] if why
                                                                    else type(e).__name__))
        return DataError('the image files of %d indices did not decode together, though each does alone'
                         % len(indices))


def phrases(notes):
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
