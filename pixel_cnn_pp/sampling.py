"""Drawing images from a PixelCNNPP, and writing them as the official train.py does."""

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import nn


def _noise(shape, nr_mix, seed):
    """All the uniform noise one batch of images consumes, drawn up front so that every
    sampling method uses the same numbers for the same pixel."""
    dummy = tf.zeros(shape[:3] + (nn.num_mixture_params(shape[3]) * nr_mix,))
    return nn.mixture_noise(dummy, shape[3], seed)


def _naive(model, shape, h, seed):
    """The official sample_from_model: a full forward pass per pixel, keeping pixel (i, j)
    of a sample drawn from that pass's output, in one compiled loop."""
    B, H, W, C = shape
    noise = _noise(shape, model.nr_logistic_mix, seed)
    positions = tf.reshape(tf.eye(H * W), [H * W, 1, H, W, 1])

    def body(p, x):
        out = model(x, h=h)
        new = out[0] if model.energy_distance else nn.sample_with_noise(out, C, noise)
        return p + 1, tf.where(positions[p] > 0, new, x)

    _, x = tf.while_loop(lambda p, x: p < H * W, body, (tf.constant(0), tf.zeros(shape)))
    return x


METHODS = {'naive': _naive}


def to_uint8(x):
    """[-1, 1] floats -> uint8 pixel values (nearest bin)."""
    return tf.cast(tf.round(tf.clip_by_value(x, -1., 1.) * 127.5 + 127.5), tf.uint8)


def sample(model, num, h=None, seed=None, method='naive', image_shape=None):
    """`num` images (uint8 NHWC) from a built PixelCNNPP. h: (num, K) conditioning for a
    conditional model; seed: reproducible samples; image_shape (H, W, C): defaults to
    32x32 with the model's channels."""
    if method not in METHODS:
        raise ValueError('method must be one of %s, got %r' % (sorted(METHODS), method))
    if not model.built or model.channels is None:
        raise ValueError('the model is not built yet: call it once on a batch or load weights first')
    if image_shape is None:
        image_shape = (32, 32, model.channels)
    if h is not None:
        h = tf.convert_to_tensor(h, tf.float32)
        if h.shape[0] != num:
            raise ValueError('h has %d rows but num is %d' % (h.shape[0], num))
    draw = tf.function(METHODS[method])
    seed = tf.constant(seed, tf.int64) if seed is not None else None
    return to_uint8(draw(model, (num,) + tuple(image_shape), h, seed)).numpy()


def tile(images, border=255):
    """Up to 100 uint8 images on a square grid with 1-pixel borders (official img_tile)."""
    images = np.asarray(images)[:100]
    n, H, W, C = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * (H + 1) + 1, cols * (W + 1) + 1, C), border, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        grid[1 + r * (H + 1):1 + r * (H + 1) + H, 1 + c * (W + 1):1 + c * (W + 1) + W] = img
    return grid


def write_samples(images, prefix):
    """prefix.png (a tiled grid) and prefix.npz (`samples`: uint8 NHWC)."""
    tf.io.write_file(prefix + '.png', tf.io.encode_png(tile(images)))
    np.savez(prefix + '.npz', samples=np.asarray(images))
