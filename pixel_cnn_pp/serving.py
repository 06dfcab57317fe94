"""A trained PixelCNNPP as a SavedModel that scores and samples in any TensorFlow program,
without this package: signatures `log_prob` and `sample`."""

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import config, sampling, scoring
from pixel_cnn_pp.images import to_uint8


class Serving(tf.Module):
    """The model's weights and two functions, for tf.saved_model.save:

    - log_prob(images: uint8 [N, H, W, C][, h: float32 [N, num_labels]]) ->
      {'nats': log p(x) <= 0, 'bits_per_dim': -nats / (ln 2 * H * W * C)}, both [N];
    - sample(num: int32, seed: int32[, h]) -> {'images': uint8 [num, H, W, C]} of the
      model's image_shape, drawn by the fast sampler.

    h (one-hot labels) is an input only for a class-conditional model. Inputs of another
    shape are refused with an InvalidArgumentError saying what the function takes (a wrong
    dtype: TensorFlow's own one-line error naming the expected one)."""

    def __init__(self, model):
        super().__init__(name='pixel_cnn_pp')
        model.require('export as a SavedModel')
        self.model = model
        H, W, C = model.image_shape
        self.sampler = sampling.sampler(model, model.image_shape, bool(model.num_labels))
        self.sampler_variables = self.sampler.variables()  # saved with the functions
        h_spec = [tf.TensorSpec([None, model.num_labels], tf.float32, name='h')] if model.num_labels else []
        self.log_prob = tf.function(self._log_prob, input_signature=[
            tf.TensorSpec([None, None, None, C], tf.uint8, name='images')] + h_spec)
        self.sample = tf.function(self._sample, input_signature=[
            tf.TensorSpec([], tf.int32, name='num'), tf.TensorSpec([], tf.int32, name='seed')] + h_spec)

    def _takes(self, function):
        """What the signature `function` takes, for its error message."""
        C, K = self.model.image_shape[2], self.model.num_labels
        h = ''
        if K:
            h = ' and h: float32 [%s, %d] (one-hot labels, a row per %s)' % (
                'N' if function == 'log_prob' else 'num', K, 'image' if function == 'log_prob' else 'sample')
        if function == 'log_prob':
            return 'log_prob takes images: uint8 [N, H, W, %d] with H and W multiples of 4%s' % (C, h)
        return 'sample takes num: int32 >= 0, seed: int32%s' % h.replace(' and', ',')

    def _log_prob(self, images, h=None):
        shape = tf.shape(images)
        m = config.MULTIPLE  # config.fits, in the graph
        ok = (shape[1] > 0) & (shape[2] > 0) & (shape[1] % m == 0) & (shape[2] % m == 0)
        ok &= shape[3] == self.model.image_shape[2]
        got = ['got images of shape', shape]
        if h is not None:
            ok &= (tf.shape(h)[0] == shape[0]) & (tf.shape(h)[1] == self.model.num_labels)
            got += ['and h of shape', tf.shape(h)]
        images = _checked(ok, [self._takes('log_prob') + ';'] + got, images)
        nats = tf.reduce_sum(scoring.pixel_log_probs(self.model, images, h), axis=[1, 2])
        dims = tf.cast(tf.reduce_prod(tf.shape(images)[1:]), tf.float32)
        return {'nats': nats, 'bits_per_dim': -nats / (np.log(2.) * dims)}

    def _sample(self, num, seed, h=None):
        H, W, C = self.model.image_shape
        ok, got = num >= 0, ['got num', num]
        if h is not None:
            ok &= (tf.shape(h)[0] == num) & (tf.shape(h)[1] == self.model.num_labels)
            got += ['and h of shape', tf.shape(h)]
        num = _checked(ok, [self._takes('sample') + ';'] + got, num)
        u_mix, u_logistic = sampling.noise((num, H, W, C), self.model.nr_logistic_mix, seed)
        x = self.sampler.run(u_mix, u_logistic, tf.zeros_like(u_logistic), 0, 1., *([] if h is None else [h]))
        return {'images': to_uint8(x)}

    def save(self, directory):
        """Writes the SavedModel to directory."""
        tf.saved_model.save(self, directory, signatures={
            'log_prob': self.log_prob.get_concrete_function(),
            'sample': self.sample.get_concrete_function()})


def _checked(ok, message, x):
    """x, once ok holds; else an InvalidArgumentError "assertion failed: [message...]"."""
    with tf.control_dependencies([tf.debugging.Assert(ok, message, summarize=4)]):
        return tf.identity(x)
