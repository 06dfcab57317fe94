"""Drawing images from a PixelCNNPP: `sample`, with the official per-pixel loop (naive.py)
or the fast cached sampler (fast.py, with its caches in cache.py); the noise and the row
step's inputs they share (inputs.py). The grid and files the images are written to:
images.py."""

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import config, images
from pixel_cnn_pp.config import ConfigError
from pixel_cnn_pp.sampling.fast import FastSampler
from pixel_cnn_pp.sampling.inputs import noise
from pixel_cnn_pp.sampling.naive import NaiveSampler

METHODS = ('fast', 'naive')


def sampler(model, image_shape, conditional, method='fast', jit_compile=False):
    """The model's sampler for this image shape, conditioning and method, made once: later
    calls with any batch size reuse its compiled steps."""
    return model.memo(('sampler', method, tuple(image_shape), conditional, jit_compile), lambda: (
        FastSampler(model, image_shape, conditional, jit_compile) if method == 'fast'
        else NaiveSampler(model, image_shape, conditional)))


def xla(num, image_shape, jit_compile=None):
    """Whether the fast sampler runs its pixels compiled by XLA: jit_compile if given, else
    where it is faster once its compile is repaid within the call. On a CPU it never is: with
    the row's shared terms (step.py) the compiled loop is slower per batch than TensorFlow's
    (9.3 to 10.3 s against 8.5 to 9.0 at the paper size, 16 images), after a 35 s compile.
    On a GPU, where each of the step's small ops pays a kernel launch, from 64 images of
    32x32 in one call (not measured: no GPU here)."""
    if jit_compile is not None:
        return bool(jit_compile)
    return bool(tf.config.list_logical_devices('GPU')) and num * image_shape[0] * image_shape[1] >= 64 * 32 * 32


def path(model, num, image_shape=None, jit_compile=None, method='fast'):
    """Which sampler sample() runs for these arguments: 'naive', 'fast' or 'fast, XLA'."""
    if method == 'naive':
        return 'naive'
    return 'fast, XLA' if xla(num, image_shape or model.image_shape, jit_compile) else 'fast'


def check_arguments(method='fast', temperature=1., jit_compile=False):
    """The rules of sample()'s arguments that hold whatever the model: a ConfigError naming
    the argument."""
    if method not in METHODS:
        raise ConfigError('{method} is not one of %s' % ', '.join(METHODS), method=method)
    if jit_compile and method != 'fast':
        raise ConfigError('{jit_compile} is for {method=_fast} (it compiles the fast sampler)', jit_compile=True,
                          method=method, _fast='fast')
    if not temperature > 0:
        raise ConfigError('{temperature} is not > 0', temperature=temperature)


def check(model, method='fast', temperature=1., jit_compile=False, given_rows=0, image_shape=None):
    """What sample() needs of the model and its arguments (image_shape: default the
    model's): a ConfigError naming the argument."""
    check_arguments(method, temperature, jit_compile)
    model.require()
    if method == 'fast' and model.energy_distance:
        raise ConfigError('{method} needs a mixture model (the energy-distance head draws fresh noise each '
                          'pass): use {method=_naive}', method=method, _naive='naive')
    shape = model.image_shape if image_shape is None else config.check_image_shape(image_shape)
    if shape[2] != model.channels:
        raise ConfigError("{image_shape} does not have the model's %d channels" % model.channels, image_shape=shape)
    rows = shape[0]
    if isinstance(given_rows, bool) or not isinstance(given_rows, (int, np.integer)) or not 0 <= given_rows <= rows:
        raise ConfigError('{given_rows} is not an integer in [0, %d] (the image has %d rows)' % (rows, rows),
                          given_rows=given_rows)


def sample(model, num, h=None, seed=None, method='fast', image_shape=None, given=None,
           given_rows=0, temperature=1., jit_compile=None, progress=None):
    """`num` images (uint8 NHWC) from a built PixelCNNPP.

    h: (num, K) conditioning for a conditional model. seed: reproducible samples (the same
    seed draws the same images with either method). image_shape (H, W, C): defaults to
    model.image_shape. given (uint8 (num, H, W, C)) and given_rows = r: completion, the
    first r rows are given's and the others drawn from p(x | those rows). temperature T:
    mixture logits / T and logistic scales x T (1: the model's distribution; lower: sharper
    images of lower bits/dim if the logistics are narrower than the pixel range, as a trained
    model's are; no longer samples of the model). jit_compile=True (fast only): the
    per-pixel loop compiled by XLA (the first call of a model, shape and conditioning
    compiles it, about 35 s at the paper's size); None: where it pays (xla(); path() says
    which). progress(rows_done) is called after each image row."""
    check(model, method, temperature, jit_compile, given_rows, image_shape)
    image_shape = tuple(model.image_shape if image_shape is None else image_shape)
    shape = (num,) + image_shape
    if (h is None) != (not model.num_labels):
        raise ConfigError('this model is conditioned on %d labels: pass {h:name} (num, %d)' % (
            model.num_labels, model.num_labels) if model.num_labels else 'this model is unconditional: {h:name} must be '
            'None', h=None)
    if h is not None:
        h = tf.convert_to_tensor(h, tf.float32)
        if h.shape[0] != num:
            raise ConfigError('{h:name} has %d rows, but {num}' % h.shape[0], h=None, num=num)
    if given is None:
        if given_rows:
            raise ConfigError('{given_rows} needs the {given:name} images', given_rows=given_rows, given=None)
        given = tf.zeros(shape)
    else:
        given = np.asarray(given)
        if given.dtype != np.uint8 or given.shape != shape:
            raise ConfigError('{given:name} must be uint8 images of shape %s, got %s %s'
                              % (shape, given.dtype, given.shape), given=None)
        given = images.scale(given)
    seed = tf.constant(seed, tf.int64) if seed is not None else None
    u_mix, u_logistic = noise(shape, model.nr_logistic_mix, seed)
    jit_compile = method == 'fast' and xla(num, image_shape, jit_compile)
    x = sampler(model, image_shape, h is not None, method, jit_compile).draw(
        u_mix, u_logistic, given, given_rows, float(temperature), () if h is None else (h,), progress)
    return images.to_uint8(x).numpy()
