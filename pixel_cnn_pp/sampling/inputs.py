"""What every sampler consumes: the noise of a batch, drawn up front, and the inputs of a
row step."""

import tensorflow as tf

from pixel_cnn_pp import nn


def noise(shape, nr_mix, seed):
    """All the uniform noise one batch of images consumes, drawn up front so that every
    sampling method uses the same numbers for the same pixel."""
    dummy = tf.zeros(shape[:3] + (nn.num_mixture_params(shape[3]) * nr_mix,))
    return nn.mixture_noise(dummy, shape[3], seed)


def row_signature(model, image_shape, conditional):
    """The inputs every sampler's row step takes after its own: the noise of noise(), the
    given image (scaled; its first given_rows rows are kept), given_rows, temperature and,
    for a conditional model, h. The batch size is left open."""
    H, W, C = image_shape
    spec = [tf.TensorSpec([None, H, W, model.nr_logistic_mix]), tf.TensorSpec([None, H, W, C]),
            tf.TensorSpec([None, H, W, C]), tf.TensorSpec([], tf.int32), tf.TensorSpec([])]
    return spec + ([tf.TensorSpec([None, model.num_labels])] if conditional else [])
