"""The official sampler (sample_from_model in the official train.py): one forward pass of the
whole network per pixel."""

import weakref

import tensorflow as tf

from pixel_cnn_pp import nn
from pixel_cnn_pp.sampling.inputs import row_signature


class NaiveSampler:
    """The official sample_from_model: a full forward pass per pixel, keeping pixel (i, j)
    of a sample drawn from that pass's output; one compiled step per image row."""

    def __init__(self, model, image_shape, conditional):
        self._model, self.image_shape = weakref.ref(model), tuple(image_shape)
        H, W, C = image_shape
        self.row = tf.function(self._row, input_signature=[
            tf.TensorSpec([None, H, W, C]), tf.TensorSpec([], tf.int32)] + row_signature(model, image_shape, conditional))

    @property
    def model(self):
        return self._model()

    def _row(self, x, i, u_mix, u_logistic, given, given_rows, temperature, h=None):
        m = self.model
        H, W, C = self.image_shape

        def body(j, x):
            out = m(x, h=h)
            new = out[0] if m.energy_distance else nn.sample_with_noise(out, C, (u_mix, u_logistic), temperature)
            at = tf.reshape(tf.one_hot(i * W + j, H * W), [1, H, W, 1]) > 0
            return j + 1, tf.where(at, new, x)

        return tf.while_loop(lambda j, x: j < W, body, (tf.constant(0), x))[1]

    def draw(self, u_mix, u_logistic, given, given_rows, temperature, h=(), progress=None):
        H = self.image_shape[0]
        x = tf.where(tf.range(H)[None, :, None, None] < given_rows, given, tf.zeros_like(given))
        for i in range(H):
            if i >= given_rows:
                x = self.row(x, i, u_mix, u_logistic, given, given_rows, temperature, *h)
            if progress:
                progress(i + 1)
        return x
