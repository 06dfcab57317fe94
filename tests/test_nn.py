"""Layers and distribution functions of pixel_cnn_pp.nn against NumPy transcriptions."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import images
from pixel_cnn_pp import nn
import np_reference as ref


def random_mixture(rng, shape, channels, nr_mix, log_scale=(-3., 0.)):
    """Mixture parameters l (shape + [P * nr_mix]) with log-scales in the given range."""
    per = nn.num_mixture_params(channels)
    l = rng.normal(0., 1., shape + (per * nr_mix,))
    rest = l[..., nr_mix:].reshape(shape + (channels, -1))
    rest[..., :nr_mix] = rng.uniform(-0.9, 0.9, rest[..., :nr_mix].shape)
    rest[..., nr_mix:2 * nr_mix] = rng.uniform(*log_scale, rest[..., nr_mix:2 * nr_mix].shape)
    l[..., nr_mix:] = rest.reshape(l[..., nr_mix:].shape)
    return l.astype(np.float32)


# ---------------------------------------------------------------- shifts and layers

def test_shifts():
    x = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    down = np.zeros_like(x)
    down[:, 1:] = x[:, :-1]
    right = np.zeros_like(x)
    right[:, :, 1:] = x[:, :, :-1]
    np.testing.assert_array_equal(nn.down_shift(x), down)
    np.testing.assert_array_equal(nn.right_shift(x), right)


@pytest.mark.parametrize('make, filter_size, stride, pad', [
    (nn.down_shifted_conv2d, (2, 3), (1, 1), ((1, 0), (1, 1))),
    (nn.down_shifted_conv2d, (1, 3), (1, 1), ((0, 0), (1, 1))),
    (nn.down_shifted_conv2d, (2, 3), (2, 2), ((1, 0), (1, 1))),
    (nn.down_right_shifted_conv2d, (2, 2), (1, 1), ((1, 0), (1, 0))),
    (nn.down_right_shifted_conv2d, (2, 1), (1, 1), ((1, 0), (0, 0))),
    (nn.down_right_shifted_conv2d, (2, 2), (2, 2), ((1, 0), (1, 0))),
])
def test_shifted_conv_matches_numpy(make, filter_size, stride, pad):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    layer = make(5, filter_size, stride)
    layer(x)
    layer.g.assign(rng.uniform(0.5, 2., 5))
    layer.b.assign(rng.normal(size=5))
    W = ref.weight_norm(layer.V.numpy(), layer.g.numpy(), (0, 1, 2))
    expected = ref.conv2d(x, W, pad, stride) + layer.b.numpy()
    np.testing.assert_allclose(layer(x), expected, rtol=1e-4, atol=1e-4)


def test_dense_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4, 4, 6)).astype(np.float32)
    layer = nn.Dense(7)
    layer(x)
    layer.g.assign(rng.uniform(0.5, 2., 7))
    layer.b.assign(rng.normal(size=7))
    expected = x @ ref.weight_norm(layer.V.numpy(), layer.g.numpy(), (0,)) + layer.b.numpy()
    np.testing.assert_allclose(layer(x), expected, rtol=1e-4, atol=1e-4)


def np_transposed_conv(x, W, stride):
    """VALID transposed convolution, W (kh,kw,Cout,Cin): every input pixel scatters its
    kernel-weighted copy to the output."""
    kh, kw, cout = W.shape[:3]
    B, H, Wd = x.shape[:3]
    out = np.zeros((B, H * stride + kh - 1, Wd * stride + kw - 1, cout))
    for i in range(H):
        for j in range(Wd):
            out[:, i * stride:i * stride + kh, j * stride:j * stride + kw] += np.einsum(
                'bc,hwoc->bhwo', x[:, i, j], W)
    return out


@pytest.mark.parametrize('make, filter_size, crop_left', [
    (nn.down_shifted_deconv2d, (2, 3), 1),
    (nn.down_right_shifted_deconv2d, (2, 2), 0),
])
def test_shifted_deconv_matches_numpy(make, filter_size, crop_left):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    layer = make(5, filter_size, (2, 2))
    out = layer(x)
    assert out.shape == (2, 8, 8, 5)
    layer.g.assign(rng.uniform(0.5, 2., 5))
    W = ref.weight_norm(layer.V.numpy(), layer.g.numpy()[:, None], (0, 1, 3))
    full = np_transposed_conv(x.astype(np.float64), W, 2)
    np.testing.assert_allclose(layer(x), full[:, :8, crop_left:crop_left + 8], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('make, init_scale', [
    (lambda s: nn.Conv2d(6, init_scale=s), 1.),
    (lambda s: nn.Conv2d(6, init_scale=s), 0.1),
    (lambda s: nn.down_shifted_conv2d(6, stride=(2, 2), init_scale=s), 1.),
    (lambda s: nn.down_right_shifted_conv2d(6, init_scale=s), 1.),
    (lambda s: nn.down_shifted_deconv2d(6, stride=(2, 2), init_scale=s), 1.),
    (lambda s: nn.down_right_shifted_deconv2d(6, stride=(2, 2), init_scale=s), 0.1),
    (lambda s: nn.Deconv2d(6, init_scale=s), 1.),
    (lambda s: nn.Dense(6, init_scale=s), 1.),
])
def test_data_dependent_init_statistics(make, init_scale):
    rng = np.random.default_rng(3)
    x = (3. * rng.normal(size=(8, 8, 8, 5)) + 2.).astype(np.float32)
    layer = make(init_scale)
    out = layer(x, init=True).numpy()
    # as in the official code, the shifted deconvolutions are normalised before their crop
    normalised = layer.apply_weights(x).numpy()
    mean, var = normalised.mean(axis=(0, 1, 2)), normalised.var(axis=(0, 1, 2))
    np.testing.assert_allclose(mean, 0., atol=1e-4 * init_scale + 1e-5)
    np.testing.assert_allclose(var, init_scale ** 2, rtol=1e-3)
    # the init pass returns what the layer now computes with its new g and b
    np.testing.assert_allclose(layer(x), out, rtol=1e-5, atol=1e-6)
    assert not np.allclose(layer.g.numpy(), 1.)


@pytest.mark.parametrize('batch', [np.zeros([2, 4, 4, 3]), np.full([2, 4, 4, 3], np.nan)])
def test_init_on_degenerate_batch_fails_clearly(batch):
    layer = nn.Dense(4, name='dense_7')
    with pytest.raises(tf.errors.InvalidArgumentError, match='data-dependent init of dense_7'):
        layer(batch.astype(np.float32), init=True)
    np.testing.assert_array_equal(layer.g.numpy(), 1.)


@pytest.mark.parametrize('nonlinearity', ['concat_elu', 'elu', 'relu'])
@pytest.mark.parametrize('with_aux, with_h', [(False, False), (True, False), (True, True)])
def test_gated_resnet_matches_numpy(nonlinearity, with_aux, with_h):
    rng = np.random.default_rng(4)
    F = 4
    x = rng.normal(size=(2, 4, 4, F)).astype(np.float32)
    aux = rng.normal(size=(2, 4, 4, 2 * F)).astype(np.float32) if with_aux else None
    h = rng.normal(size=(2, 3)).astype(np.float32) if with_h else None
    block = nn.GatedResnet(F, nn.down_right_shifted_conv2d, nonlinearity, 0.5, {}, has_aux=with_aux)
    block(x, aux, h=h)
    for layer in (block.conv1, block.conv2) + ((block.nin_aux,) if with_aux else ()):
        layer.g.assign(rng.uniform(0.5, 2., layer.g.shape))
        layer.b.assign(rng.normal(size=layer.b.shape))
    f = ref.NONLINEARITIES[nonlinearity]
    pad = ((1, 0), (1, 0))

    def conv(layer, z):
        return ref.conv2d(z, ref.weight_norm(layer.V.numpy(), layer.g.numpy(), (0, 1, 2)), pad) + layer.b.numpy()

    c1 = conv(block.conv1, f(x))
    if with_aux:
        c1 = c1 + f(aux) @ ref.weight_norm(block.nin_aux.V.numpy(), block.nin_aux.g.numpy(), (0,)) \
            + block.nin_aux.b.numpy()
    c2 = conv(block.conv2, f(c1))
    if with_h:
        c2 = c2 + (h @ block.hw.numpy())[:, None, None]
    a, b = np.split(c2, 2, axis=-1)
    np.testing.assert_allclose(block(x, aux, h=h), x + a * ref.sigmoid(b), rtol=1e-4, atol=1e-4)
    # dropout only when training: with p = 0.5 about half the units of c1 are dropped
    assert not np.allclose(block(x, aux, h=h, training=True), block(x, aux, h=h))


def test_gated_resnet_names_follow_official_counters():
    counters = {'conv2d': 4, 'dense': 1}
    block = nn.GatedResnet(4, nn.down_shifted_conv2d, 'elu', 0., counters, has_aux=True)
    assert (block.conv1.name, block.nin_aux.name, block.conv2.name, block.hw_name) == \
        ('conv2d_4', 'dense_1', 'conv2d_5', 'conditional_weights_0')
    assert counters == {'conv2d': 6, 'dense': 2, 'conditional_weights': 1}


# ---------------------------------------------------------------- the loss

@pytest.mark.parametrize('channels, nr_mix', [(3, 1), (3, 5), (3, 10), (1, 1), (1, 4)])
def test_loss_matches_numpy(channels, nr_mix):
    rng = np.random.default_rng(5)
    x = images((3, 4, 5, channels), seed=5)
    x[0, 0, :2] = -1.  # both edge bins
    x[0, 1, :2] = 1.
    l = random_mixture(rng, (3, 4, 5), channels, nr_mix, log_scale=(-6., 1.))
    expected = ref.mix_logistic_nll(x, l)
    np.testing.assert_allclose(nn.discretized_mix_logistic_loss(x, l, sum_all=False), expected, rtol=1e-5)
    np.testing.assert_allclose(nn.discretized_mix_logistic_loss(x, l), expected.sum(), rtol=1e-5)


def test_loss_low_probability_bin_uses_density():
    x = np.full((1, 1, 1, 3), 0.2, np.float32)
    log_s = -6.
    l = np.zeros((1, 1, 1, 10), np.float32)
    # per channel [mean, log-scale, coefficient]: means far below x, tiny scales, no
    # coupling, so every channel's bin mass underflows 1e-5
    l[..., 1:] = np.tile([-0.5, log_s, 0.], 3)
    z = (0.2 + 0.5) / np.exp(log_s)
    log_density_times_width = -z - log_s - 2. * np.log1p(np.exp(-z)) - np.log(127.5)
    np.testing.assert_allclose(nn.discretized_mix_logistic_loss(x, l), -3 * log_density_times_width,
                               rtol=1e-5)
    np.testing.assert_allclose(nn.discretized_mix_logistic_loss(x, l), ref.mix_logistic_nll(x, l)[0],
                               rtol=1e-5)


def test_loss_gradients_finite_at_extremes():
    rng = np.random.default_rng(6)
    x = tf.constant(images((2, 4, 4, 3), seed=6))
    x = tf.tensor_scatter_nd_update(x, [[0, 0, 0], [0, 0, 1]], [[-1.] * 3, [1.] * 3])
    l = random_mixture(rng, (2, 4, 4), 3, 3, log_scale=(-12., 6.))
    l[1] *= 40.  # far-away means and saturated coefficients
    l = tf.Variable(l)
    with tf.GradientTape() as tape:
        loss = nn.discretized_mix_logistic_loss(x, l)
    grad = tape.gradient(loss, l)
    assert np.isfinite(loss.numpy()) and np.all(np.isfinite(grad.numpy()))


def all_pixel_probabilities(l_pixel, channels):
    """exp(-loss) of every 8-bit value of one pixel under its mixture l_pixel (P*nr_mix,):
    an array of shape (256,) * channels."""
    values = (np.arange(256, dtype=np.float32) - 127.5) / 127.5
    if channels == 1:
        x = values[:, None, None, None]
        l = np.broadcast_to(l_pixel, (256, 1, 1, l_pixel.size))
        return np.exp(-nn.discretized_mix_logistic_loss(x, l, sum_all=False).numpy().astype(np.float64))
    gb = np.stack(np.meshgrid(values, values, indexing='ij'), -1).reshape(-1, 2)
    l = tf.constant(np.broadcast_to(l_pixel, (gb.shape[0], 1, 1, l_pixel.size)))
    probs = np.empty((256, 256 * 256))
    loss_fn = tf.function(lambda x: nn.discretized_mix_logistic_loss(x, l, sum_all=False))
    for r in range(256):
        x = np.concatenate([np.full((gb.shape[0], 1), values[r], np.float32), gb], 1)
        probs[r] = np.exp(-loss_fn(x.reshape(-1, 1, 1, 3)).numpy().astype(np.float64))
    return probs.reshape(256, 256, 256)


@pytest.fixture(scope='module')
def rgb_pixel():
    l = random_mixture(np.random.default_rng(7), (1, 1, 1), 3, 2, log_scale=(-4., -2.5))[0, 0, 0]
    return l, all_pixel_probabilities(l, 3)


def test_loss_is_a_distribution_rgb(rgb_pixel):
    assert abs(rgb_pixel[1].sum() - 1.) < 1e-4


def test_loss_is_a_distribution_grayscale():
    l = random_mixture(np.random.default_rng(8), (1, 1, 1), 1, 4)[0, 0, 0]
    assert abs(all_pixel_probabilities(l, 1).sum() - 1.) < 1e-5


# ---------------------------------------------------------------- the sampler

def to_uint8(x):
    return np.rint(np.asarray(x) * 127.5 + 127.5).astype(np.int64)


def assert_sampled_from(cells, probs):
    """The total variation between the histogram of `cells` (flat indices) and `probs`
    is within 5% of that of an exact multinomial draw of the same size (its noise floor)."""
    probs = probs.ravel()
    n = cells.size
    tv = 0.5 * np.abs(np.bincount(cells, minlength=probs.size) / n - probs).sum()
    exact = np.random.default_rng(0).multinomial(n, probs / probs.sum())
    floor = 0.5 * np.abs(exact / n - probs).sum()
    assert tv < 1.05 * floor + 1e-3, (tv, floor)


def test_sampler_histogram_matches_mixture_rgb(rgb_pixel):
    l, probs = rgb_pixel
    n = 200_000
    samples = nn.sample_from_discretized_mix_logistic(np.broadcast_to(l, (n, 1, 1, l.size)), 2, seed=0)
    v = to_uint8(samples).reshape(n, 3)
    assert_sampled_from((v[:, 0] * 256 + v[:, 1]) * 256 + v[:, 2], probs)
    for axis in range(3):
        marginal = probs.sum(axis=tuple(a for a in range(3) if a != axis))
        assert_sampled_from(v[:, axis], marginal)


def test_sampler_histogram_matches_mixture_grayscale():
    l = random_mixture(np.random.default_rng(9), (1, 1, 1), 1, 3)[0, 0, 0]
    n = 200_000
    samples = nn.sample_from_discretized_mix_logistic(np.broadcast_to(l, (n, 1, 1, l.size)), 3, seed=1)
    assert samples.shape == (n, 1, 1, 1)
    assert_sampled_from(to_uint8(samples).ravel(), all_pixel_probabilities(l, 1))


def test_sampler_seed_is_reproducible():
    l = random_mixture(np.random.default_rng(10), (2, 4, 4), 3, 5)
    a = nn.sample_from_discretized_mix_logistic(l, 5, seed=3)
    b = nn.sample_from_discretized_mix_logistic(l, 5, seed=3)
    c = nn.sample_from_discretized_mix_logistic(l, 5, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(np.abs(a) <= 1.)


def test_sampler_rejects_wrong_size():
    with pytest.raises(ValueError, match='nr_mix = 4'):
        nn.sample_from_discretized_mix_logistic(np.zeros((1, 2, 2, 30), np.float32), 4)


# ---------------------------------------------------------------- the rest

def test_log_sum_exp_and_log_softmax():
    z = np.random.default_rng(11).normal(0., 30., (5, 7)).astype(np.float32)
    np.testing.assert_allclose(nn.log_sum_exp(z), ref.logsumexp(z.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(nn.log_prob_from_logits(z), ref.log_softmax(z.astype(np.float64)),
                               rtol=1e-5, atol=1e-4)


def test_energy_distance_matches_numpy():
    rng = np.random.default_rng(12)
    x = rng.uniform(-1, 1, (2, 4, 4, 3)).astype(np.float32)
    samples = [rng.uniform(-1, 1, x.shape).astype(np.float32) for _ in range(4)]

    def d(a, b):
        return ((((127.5 * (a - b).astype(np.float64)) ** 2).sum(-1) + 1e-10) ** 0.75).sum()

    l1 = np.mean([d(x, s) for s in samples])
    l2 = np.mean([d(samples[i], samples[j]) for i in range(4) for j in range(i + 1, 4)])
    np.testing.assert_allclose(nn.energy_distance(x, samples), 2 * l1 - l2, rtol=1e-5)
