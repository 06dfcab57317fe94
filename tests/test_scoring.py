"""log_prob and log_prob_map: minus the official per-image loss, per-pixel terms that sum to
it, and the marginal of a class-conditional model."""

import numpy as np
import pytest
import tensorflow as tf

import pixel_cnn_pp
from pixel_cnn_pp import PixelCNNPP
from np_reference import mix_logistic_nll


def model_and_images(num_labels=0, channels=3, n=5):
    model = PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=3, num_labels=num_labels)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 12, channels), dtype=np.uint8)
    x = (images.astype(np.float32) - 127.5) / 127.5
    h = tf.one_hot(np.arange(n) % num_labels, num_labels) if num_labels else None
    model(x, h=h, init=True)
    return model, images, x, h


@pytest.mark.parametrize('channels', [3, 1])
def test_log_prob_is_minus_the_per_image_loss(channels):
    model, images, x, _ = model_and_images(channels=channels)
    nats = pixel_cnn_pp.log_prob(model, images, batch_size=2)  # batches of 2, 2 and 1
    assert nats.shape == (5,) and nats.dtype == np.float32
    np.testing.assert_allclose(nats, -mix_logistic_nll(x, model(x).numpy()), rtol=1e-5)
    np.testing.assert_allclose(pixel_cnn_pp.bits_per_dim(nats, images.shape[1:]),
                               -nats / (np.log(2.) * 8 * 12 * channels), rtol=1e-6)


def test_map_sums_to_log_prob_and_each_pixel_is_a_log_probability():
    model, images, _, _ = model_and_images()
    pixels = pixel_cnn_pp.log_prob_map(model, images)
    assert pixels.shape == (5, 8, 12)
    assert np.all(pixels <= 0)
    np.testing.assert_allclose(pixels.sum(axis=(1, 2)), pixel_cnn_pp.log_prob(model, images), rtol=1e-5)
    # the first pixel sees nothing: its term depends on no other pixel of the image
    other = images.copy()
    other[:, 1:] = 255 - other[:, 1:]
    np.testing.assert_allclose(pixel_cnn_pp.log_prob_map(model, other)[:, 0, 0], pixels[:, 0, 0], rtol=1e-6)


def test_conditional_given_labels_and_marginal():
    K = 3
    model, images, x, h = model_and_images(num_labels=K)
    given = pixel_cnn_pp.log_prob(model, images, h=h)
    np.testing.assert_allclose(given, -mix_logistic_nll(x, model(x, h=h).numpy()), rtol=1e-5)
    per_label = np.stack([pixel_cnn_pp.log_prob(model, images, h=np.eye(K, dtype=np.float32)[[y] * 5])
                          for y in range(K)]).astype(np.float64)
    expected = np.logaddexp.reduce(per_label, axis=0) - np.log(K)
    marginal = pixel_cnn_pp.log_prob(model, images)
    np.testing.assert_allclose(marginal, expected, rtol=1e-5)
    pixels = pixel_cnn_pp.log_prob_map(model, images)
    assert np.all(pixels <= 1e-6)
    np.testing.assert_allclose(pixels.sum(axis=(1, 2)), marginal, rtol=1e-5)
    # the marginal of the first pixel is the average of its probability under each label
    first = np.stack([pixel_cnn_pp.log_prob_map(model, images, h=np.eye(K, dtype=np.float32)[[y] * 5])[:, 0, 0]
                      for y in range(K)]).astype(np.float64)
    np.testing.assert_allclose(pixels[:, 0, 0], np.logaddexp.reduce(first, axis=0) - np.log(K), rtol=1e-5)


def test_bad_inputs():
    model, images, _, _ = model_and_images()
    with pytest.raises(TypeError, match='images must be uint8'):
        pixel_cnn_pp.log_prob(model, images.astype(np.float32))
    with pytest.raises(ValueError, match=r'images must have 3 channels'):
        pixel_cnn_pp.log_prob(model, images[..., :1])
    with pytest.raises(ValueError, match='positive multiples of 4'):
        pixel_cnn_pp.log_prob(model, images[:, :6])
    with pytest.raises(ValueError, match='unconditional: h must be None'):
        pixel_cnn_pp.log_prob(model, images, h=np.zeros((5, 2)))
    cond, images, _, _ = model_and_images(num_labels=2)
    with pytest.raises(ValueError, match=r'h must be \(N, 2\) = \(5, 2\)'):
        pixel_cnn_pp.log_prob(cond, images, h=np.zeros((4, 2)))


def test_compiled_caches_do_not_keep_a_model_alive():
    """The model's memo of the fast sampler and of log_prob holds it weakly."""
    import gc
    import weakref
    from pixel_cnn_pp import model as model_module
    model, images, _, _ = model_and_images(n=2)
    pixel_cnn_pp.sample(model, 1, seed=0, image_shape=(8, 8, 3))
    pixel_cnn_pp.log_prob(model, images)
    assert {key[0] for key in model_module._memos[model]} == {'sampler', 'log_prob_map'}
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
