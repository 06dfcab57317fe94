"""A trained PixelCNNPP as a SavedModel that scores and samples in any TensorFlow program,
without this package: signatures `log_prob` and `sample`."""

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import sampling, scoring
from pixel_cnn_pp.images import to_uint8


class Serving(tf.Module):
    """The model's weights and two functions, for tf.saved_model.save:

    - log_prob(images: uint8 [N, H, W, C][, h: float32 [N, num_labels]]) ->
      {'nats': log p(x) <= 0, 'bits_per_dim': -nats / (ln 2 * H * W * C)}, both [N];
    - sample(num: int32, seed: int32[, h]) -> {'images': uint8 [num, H, W, C]} of the
      model's image_shape, drawn by the fast sampler.

    h (one-hot labels) is an input only for a class-conditional model."""

    def __init__(self, model):
        super().__init__(name='pixel_cnn_pp')
        if model.energy_distance:
            raise ValueError('an energy-distance model has no likelihood to export')
        self.model = model
        H, W, C = model.image_shape
        self.sampler = sampling.sampler(model, model.image_shape, bool(model.num_labels))
        self.sampler_variables = self.sampler.variables()  # saved with the functions
        h_spec = [tf.TensorSpec([None, model.num_labels], tf.float32, name='h')] if model.num_labels else []
        self.log_prob = tf.function(self._log_prob, input_signature=[
            tf.TensorSpec([None, None, None, C], tf.uint8, name='images')] + h_spec)
        self.sample = tf.function(self._sample, input_signature=[
            tf.TensorSpec([], tf.int32, name='num'), tf.TensorSpec([], tf.int32, name='seed')] + h_spec)

    def _log_prob(self, images, h=None):
        nats = tf.reduce_sum(scoring.pixel_log_probs(self.model, images, h), axis=[1, 2])
        dims = tf.cast(tf.reduce_prod(tf.shape(images)[1:]), tf.float32)
        return {'nats': nats, 'bits_per_dim': -nats / (np.log(2.) * dims)}

    def _sample(self, num, seed, h=None):
        H, W, C = self.model.image_shape
        u_mix, u_logistic = sampling.noise((num, H, W, C), self.model.nr_logistic_mix, seed)
        x = self.sampler.run(u_mix, u_logistic, tf.zeros_like(u_logistic), 0, 1., *([] if h is None else [h]))
        return {'images': to_uint8(x)}


def export_saved_model(model, directory):
    """Writes the SavedModel of Serving(model) to directory."""
    serving = Serving(model)
    tf.saved_model.save(serving, directory, signatures={
        'log_prob': serving.log_prob.get_concrete_function(),
        'sample': serving.sample.get_concrete_function()})
