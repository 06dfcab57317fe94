"""Images as the official code sees them and the files they go to: the uint8 <-> [-1, 1]
convention (make_feed_dict's scaling), the sample grid (plotting.img_tile), PNG output.
(Reading image sets: data.read_set; folders of image files: folders.py.)"""

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import files


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
