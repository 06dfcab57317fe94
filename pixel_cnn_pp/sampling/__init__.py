"""Drawing images from a PixelCNNPP: `sample`, with the official per-pixel loop (naive.py)
or the fast cached sampler (fast.py, with its caches in cache.py); the noise and the row
step's inputs they share (inputs.py). The grid and files the images are written to:
images.py."""

import weakref

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import images
from pixel_cnn_pp.sampling.fast import FastSampler
from pixel_cnn_pp.sampling.inputs import noise
from pixel_cnn_pp.sampling.naive import NaiveSampler

# One sampler per model, method, image shape, conditioning and compilation, reused by every call.
_samplers = weakref.WeakKeyDictionary()
METHODS = ('fast', 'naive')


def sampler(model, image_shape, conditional, method='fast', jit_compile=False):
    """The model's sampler for this image shape, conditioning and method, made once: later
    calls with any batch size reuse its compiled steps."""
    samplers = _samplers.setdefault(model, {})
    key = (method, tuple(image_shape), conditional, jit_compile)
    if key not in samplers:
        samplers[key] = FastSampler(model, image_shape, conditional, jit_compile) if method == 'fast' \
            else NaiveSampler(model, image_shape, conditional)
    return samplers[key]


def sample(model, num, h=None, seed=None, method='fast', image_shape=None, given=None,
           given_rows=0, temperature=1., jit_compile=False, progress=None):
    """`num` images (uint8 NHWC) from a built PixelCNNPP.

    h: (num, K) conditioning for a conditional model. seed: reproducible samples (the same
    seed draws the same images with either method). image_shape (H, W, C): defaults to
    model.image_shape. given (uint8 (num, H, W, C)) and given_rows = r: completion, the
    first r rows are given's and the others drawn from p(x | those rows). temperature T:
    mixture logits / T and logistic scales x T (1: the model's distribution; lower: sharper
    images of lower bits/dim if the logistics are narrower than the pixel range, as a trained
    model's are; no longer samples of the model). jit_compile=True (fast only):
    the per-pixel loop compiled by XLA, faster per batch once compiled (the first call of
    a model, shape and conditioning compiles it, about a minute at the paper's size).
    progress(rows_done) is called after each image row."""
    if method not in METHODS:
        raise ValueError('method must be one of %s, got %r' % (sorted(METHODS), method))
    if not model.built or model.channels is None:
        raise ValueError('the model is not built yet: call it once on a batch or load weights first')
    if jit_compile and method != 'fast':
        raise ValueError("jit_compile=True compiles the fast sampler: use method='fast'")
    if method == 'fast' and model.energy_distance:
        raise ValueError("method='fast' needs a mixture model; the energy-distance head "
                         "draws fresh noise each pass: use method='naive'")
    if not temperature > 0:
        raise ValueError('temperature must be > 0, got %r' % temperature)
    image_shape = tuple(image_shape or model.image_shape)
    shape = (num,) + image_shape
    if h is not None:
        h = tf.convert_to_tensor(h, tf.float32)
        if h.shape[0] != num:
            raise ValueError('h has %d rows but num is %d' % (h.shape[0], num))
    if given is None:
        if given_rows:
            raise ValueError('given_rows=%d needs the given images' % given_rows)
        given = tf.zeros(shape)
    else:
        given = np.asarray(given)
        if given.dtype != np.uint8 or given.shape != shape:
            raise ValueError('given must be uint8 images of shape %s, got %s %s' % (shape, given.dtype, given.shape))
        if not 0 <= given_rows <= image_shape[0]:
            raise ValueError('given_rows must be in [0, %d], got %d' % (image_shape[0], given_rows))
        given = images.scale(given)
    seed = tf.constant(seed, tf.int64) if seed is not None else None
    u_mix, u_logistic = noise(shape, model.nr_logistic_mix, seed)
    x = sampler(model, image_shape, h is not None, method, jit_compile).draw(
        u_mix, u_logistic, given, given_rows, float(temperature), () if h is None else (h,), progress)
    return images.to_uint8(x).numpy()
