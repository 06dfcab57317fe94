"""Layers and distribution functions of PixelCNN++ (the official pixel_cnn_pp/nn.py, in its
order; its adam_updates is updates.Adam, and get_var_maybe_avg is the averaged model).

Weight-normalised layers are Keras layers whose variables carry the official names
(`V`, `g`, `b`, `hw`) and whose layer names are the official scopes (`conv2d_3`,
`dense_0`, `deconv2d_1`, `conditional_weights_2`), so an official checkpoint maps onto
them one to one. Calling a layer with `init=True` runs the official data-dependent
initialisation on that batch.
"""
import contextlib

import numpy as np
import tensorflow as tf
import keras

from pixel_cnn_pp import config

INIT_EPS = 1e-10  # the official variance epsilon of the data-dependent init
# Every layer is registered, so `keras.models.load_model` finds it after `import pixel_cnn_pp`.
serializable = keras.saving.register_keras_serializable(package='pixel_cnn_pp')


def int_shape(x):
    return list(map(int, x.shape))


def concat_elu(x):
    """ELU of [x, -x] along the channels (official concat_elu)."""
    return tf.nn.elu(tf.concat([x, -x], axis=-1))

# the function of each resnet_nonlinearity of config.NONLINEARITIES: concat_elu, else tf.nn's
NONLINEARITIES = {name: concat_elu if name == 'concat_elu' else getattr(tf.nn, name)
                  for name in config.NONLINEARITIES}


def log_sum_exp(x):
    """Numerically stable log(sum(exp(x))) over the last axis."""
    m = tf.reduce_max(x, axis=-1)
    m2 = tf.reduce_max(x, axis=-1, keepdims=True)
    return m + tf.math.log(tf.reduce_sum(tf.exp(x - m2), axis=-1))


def log_prob_from_logits(x):
    """Numerically stable log_softmax over the last axis."""
    m = tf.reduce_max(x, axis=-1, keepdims=True)
    return x - m - tf.math.log(tf.reduce_sum(tf.exp(x - m), axis=-1, keepdims=True))


def num_mixture_params(channels):
    """Outputs per mixture component: 1 logit, then per channel a mean and a log-scale,
    plus one coupling coefficient per earlier channel (10 for RGB, 3 for grayscale)."""
    config.check_channels(channels, 'images')
    return config.MIXTURE_PARAMS[channels]


def _unpack_mixture(l, channels):
    """Splits l (B,H,W,P*nr_mix) into logits (B,H,W,nr_mix) and per-channel
    means, raw log-scales and raw coefficients (B,H,W,C,nr_mix), official layout."""
    nr_mix = l.shape[-1] // num_mixture_params(channels)
    # tf.split and tf.unstack (here and in the loss) rather than strided slices: the
    # gradient of a strided slice costs several times as much on CPU.
    logit_probs, l = tf.split(l, [nr_mix, l.shape[-1] - nr_mix], axis=-1)
    per_channel = 3 if channels == 3 else 2
    l = tf.reshape(l, tf.concat([tf.shape(l)[:3], [channels, per_channel * nr_mix]], 0))
    parts = tf.split(l, per_channel, axis=-1)
    return (nr_mix, logit_probs) + tuple(parts) + ((None,) if channels == 1 else ())


def coupled_mean(mean, coeffs, previous):
    """The mean of a channel given the values of the channels before it: red's as it is,
    green's + c0 * red, blue's + c1 * red + c2 * green (the official RGB coupling; `coeffs`
    the three coefficients after tanh, `previous` the values before this channel). Plain
    arithmetic, so that it serves TensorFlow tensors and the codec's NumPy float64 alike."""
    if len(previous) == 0:
        return mean
    if len(previous) == 1:
        return mean + coeffs[0] * previous[0]
    return mean + coeffs[1] * previous[0] + coeffs[2] * previous[1]


def discretized_mix_logistic_loss(x, l, sum_all=True):
    """Negative log-likelihood in nats of x (B,H,W,C in [-1,1], C = 3 or 1) under the
    discretized mixture of logistics l (official discretized_mix_logistic_loss).
    Returns a scalar if sum_all, else one value per image."""
    log_probs = discretized_mix_logistic_log_prob(x, l)
    if sum_all:
        return -tf.reduce_sum(log_probs)
    return -tf.reduce_sum(log_probs, axis=[1, 2])


def discretized_mix_logistic_log_prob(x, l):
    """log p(x_ij | x_<ij) in nats of every pixel (B,H,W), its channels together: the terms
    discretized_mix_logistic_loss sums (and negates)."""
    x = tf.convert_to_tensor(x)
    l = tf.convert_to_tensor(l)
    channels = x.shape[-1]
    nr_mix, logit_probs, means, log_scales, coeffs = _unpack_mixture(l, channels)
    log_scales = tf.maximum(log_scales, -7.)
    x = x[..., None] + tf.zeros_like(means)
    if channels == 3:
        c, m, xs = tf.unstack(tf.tanh(coeffs), axis=3), tf.unstack(means, axis=3), tf.unstack(x, axis=3)
        means = tf.stack([coupled_mean(m[k], c, xs[:k]) for k in range(3)], axis=3)
    centered_x = x - means
    inv_stdv = tf.exp(-log_scales)
    plus_in = inv_stdv * (centered_x + 1. / 255.)
    cdf_plus = tf.sigmoid(plus_in)
    min_in = inv_stdv * (centered_x - 1. / 255.)
    cdf_min = tf.sigmoid(min_in)
    log_cdf_plus = plus_in - tf.nn.softplus(plus_in)  # x = 0 (before scaling)
    log_one_minus_cdf_min = -tf.nn.softplus(min_in)  # x = 255 (before scaling)
    cdf_delta = cdf_plus - cdf_min
    mid_in = inv_stdv * centered_x
    log_pdf_mid = mid_in - log_scales - 2. * tf.nn.softplus(mid_in)
    # The maximum keeps the log (and its gradient) finite in the branches tf.where
    # does not select; where cdf_delta is tiny the density at the bin centre is used.
    log_probs = tf.where(
        x < -0.999, log_cdf_plus,
        tf.where(x > 0.999, log_one_minus_cdf_min,
                 tf.where(cdf_delta > 1e-5, tf.math.log(tf.maximum(cdf_delta, 1e-12)),
                          log_pdf_mid - np.log(127.5))))
    log_probs = tf.reduce_sum(log_probs, axis=3) + log_prob_from_logits(logit_probs)
    return log_sum_exp(log_probs)


def mixture_noise(l, channels, seed=None):
    """The uniform noise sample_from_discretized_mix_logistic consumes: one value per
    component (Gumbel-max choice) and one per channel (logistic sample), drawn in
    [1e-5, 1 - 1e-5] as the official sampler does. A seed makes it reproducible."""
    shape = tf.shape(l)
    nr_mix = l.shape[-1] // num_mixture_params(channels)
    mix_shape = tf.concat([shape[:3], [nr_mix]], 0)
    logistic_shape = tf.concat([shape[:3], [channels]], 0)
    lo, hi = 1e-5, 1. - 1e-5
    if seed is None:
        return (tf.random.uniform(mix_shape, lo, hi), tf.random.uniform(logistic_shape, lo, hi))
    seed = tf.cast(seed, tf.int64)
    return (tf.random.stateless_uniform(mix_shape, tf.stack([seed, 0]), lo, hi),
            tf.random.stateless_uniform(logistic_shape, tf.stack([seed, 1]), lo, hi))


def sample_with_noise(l, channels, noise, temperature=1.):
    """Samples x (B,H,W,C in [-1,1]) from the mixture l given mixture_noise(...).
    temperature T divides the mixture logits by T and multiplies the chosen logistic's scale
    by T (T = 1: the model's distribution, bit for bit; T < 1: sharper, no longer a sample
    of the model)."""
    u_mix, u = noise
    nr_mix, logit_probs, means, log_scales, coeffs = _unpack_mixture(l, channels)
    sel = tf.one_hot(tf.argmax(logit_probs / temperature - tf.math.log(-tf.math.log(u_mix)), axis=3),
                     depth=nr_mix, dtype=l.dtype)[:, :, :, None, :]
    means = tf.reduce_sum(means * sel, axis=4)
    log_scales = tf.maximum(tf.reduce_sum(log_scales * sel, axis=4), -7.)
    x = means + tf.exp(log_scales) * temperature * (tf.math.log(u) - tf.math.log(1. - u))
    if channels == 1:
        return tf.clip_by_value(x, -1., 1.)
    coeffs = tf.unstack(tf.reduce_sum(tf.tanh(coeffs) * sel, axis=4), axis=3)
    out = []
    for k in range(3):
        out.append(tf.clip_by_value(coupled_mean(x[..., k], coeffs, out), -1., 1.))
    return tf.stack(out, axis=-1)


def sample_from_discretized_mix_logistic(l, nr_mix, seed=None):
    """One sample per pixel from the mixture l (official sample_from_discretized_mix_logistic):
    Gumbel-max choice of the component, a logistic sample, clipping to [-1, 1] and the
    RGB coupling. The number of channels follows from l's size and nr_mix."""
    l = tf.convert_to_tensor(l)
    per_mix = l.shape[-1] // nr_mix
    if per_mix * nr_mix != l.shape[-1] or per_mix not in (10, 3):
        raise ValueError('l has %d channels; expected 10 * nr_mix (RGB) or 3 * nr_mix '
                         '(grayscale) with nr_mix = %d' % (l.shape[-1], nr_mix))
    channels = 3 if per_mix == 10 else 1
    return sample_with_noise(l, channels, mixture_noise(l, channels, seed))


def energy_distance(x, x_sample):
    """Energy distance between x and a list of model samples (official energy_distance)."""
    def dist(a, b):
        return tf.reduce_sum(tf.pow(1e-10 + tf.reduce_sum(tf.square(127.5 * (a - b)), 3), 0.75))
    l1 = tf.add_n([dist(x, xs) for xs in x_sample]) / len(x_sample)
    pairs = [(i, j) for i in range(len(x_sample)) for j in range(i + 1, len(x_sample))]
    l2 = tf.add_n([dist(x_sample[i], x_sample[j]) for i, j in pairs]) / len(pairs)
    return 2. * l1 - l2


def next_name(layer_name, counters):
    """The official get_name: layer_name + '_' + a per-type counter."""
    n = counters.get(layer_name, 0)
    counters[layer_name] = n + 1
    return '%s_%d' % (layer_name, n)


def _cast(tensors, dtype):
    return [tf.cast(t, dtype) for t in tensors]


_read_next = [False]


@contextlib.contextmanager
def weights_read_next():
    """Weights made inside start as zeros, not random: a saved model's, whose values are read
    next (53.7M random numbers at the paper's size take a second and a half)."""
    _read_next[0] = True
    try:
        yield
    finally:
        _read_next[0] = False


def _normal_init():
    return 'zeros' if _read_next[0] else keras.initializers.RandomNormal(0., 0.05)


class _WeightNorm(keras.layers.Layer):
    """Shared part of the weight-normalised layers: variables V, g = 1, b = 0, and the
    data-dependent init g <- g * s, b <- b - m * s with s = init_scale / sqrt(var + 1e-10),
    after which the output is recomputed with the new g and b (as in the official code)."""

    def __init__(self, num_units, init_scale=1., **kwargs):
        super().__init__(**kwargs)
        self.num_units = num_units
        self.init_scale = init_scale

    def get_config(self):
        return dict(super().get_config(), init_scale=self.init_scale)

    def _add_variables(self, v_shape):
        # autocast=False: under a mixed precision policy the weight normalisation runs in
        # float32 and apply() casts its result to the compute dtype.
        self.V = self.add_weight(name='V', shape=v_shape, initializer=_normal_init(), autocast=False)
        self.g = self.add_weight(name='g', shape=(self.num_units,), initializer='ones', autocast=False)
        self.b = self.add_weight(name='b', shape=(self.num_units,), initializer='zeros', autocast=False)

    def apply_weights(self, x):
        return self.apply(x, self.weights_now())

    def call(self, x, init=False):
        out = self.apply_weights(x)
        if init:
            m, v = tf.nn.moments(tf.cast(out, tf.float32), axes=list(range(len(out.shape) - 1)))
            # The official code would scale a constant channel by 1e5 and training would
            # then diverge; a constant or non-finite init batch is an error instead.
            tf.debugging.assert_greater(
                v, INIT_EPS, message='data-dependent init of %s: some output channels are constant '
                'or not finite on the init batch; use a larger batch of real, finite images'
                % self.name)
            scale = self.init_scale / tf.sqrt(v + INIT_EPS)
            self.g.assign(self.g * scale)
            self.b.assign(self.b - m * scale)
            out = self.apply_weights(x)
        return out


@serializable
class Dense(_WeightNorm):
    """Weight-normalised fully connected layer (official dense) over the last axis of
    an input of any rank; on a 4-D input it is the official nin (1x1 convolution)."""

    def get_config(self):
        return dict(super().get_config(), num_units=self.num_units)

    def build(self, input_shape):
        self._add_variables((input_shape[-1], self.num_units))

    def weights_now(self):
        return self.V, self.g / tf.sqrt(tf.reduce_sum(tf.square(self.V), axis=0)), self.b

    def apply(self, x, weights):
        V, scaler, b = _cast(weights, x.dtype)
        out = tf.matmul(tf.reshape(x, [-1, x.shape[-1]]), V) * scaler + b
        return tf.reshape(out, tf.concat([tf.shape(x)[:-1], [self.num_units]], 0))


@serializable
class Conv2d(_WeightNorm):
    """Weight-normalised 2-D convolution (official conv2d). `pad` is 'SAME', 'VALID'
    or explicit [[top, bottom], [left, right]] padding."""

    def __init__(self, num_filters, filter_size=(3, 3), stride=(1, 1), pad='SAME', **kwargs):
        super().__init__(num_filters, **kwargs)
        self.filter_size = tuple(filter_size)
        self.stride = tuple(stride)
        self.pad = pad if isinstance(pad, str) else [[0, 0], list(pad[0]), list(pad[1]), [0, 0]]

    def get_config(self):
        pad = self.pad if isinstance(self.pad, str) else self.pad[1:3]
        return dict(super().get_config(), num_filters=self.num_units, filter_size=self.filter_size,
                    stride=self.stride, pad=pad)

    def build(self, input_shape):
        self._add_variables(self.filter_size + (input_shape[-1], self.num_units))

    def weights_now(self):
        """(W, b): the weight-normalised kernel and bias, for apply()."""
        return self.g * tf.nn.l2_normalize(self.V, [0, 1, 2]), self.b

    def apply(self, x, weights, pad=None):
        """The convolution with given weights; pad overrides the layer's padding."""
        W, b = _cast(weights, x.dtype)
        pad = self.pad if pad is None else pad
        if not isinstance(pad, str):
            # tf.pad + VALID, as the official code: conv2d's own explicit padding has no
            # oneDNN gradient kernels on CPU, and training runs about 20% slower with it.
            x, pad = tf.pad(x, pad), 'VALID'
        return tf.nn.bias_add(tf.nn.conv2d(x, W, (1,) + self.stride + (1,), pad), b)


@serializable
class Deconv2d(_WeightNorm):
    """Weight-normalised transposed convolution (official deconv2d); V has shape
    filter_size + [num_filters, in_channels] and is normalised over axes [0, 1, 3]."""

    def __init__(self, num_filters, filter_size=(3, 3), stride=(1, 1), pad='SAME', **kwargs):
        super().__init__(num_filters, **kwargs)
        self.filter_size = tuple(filter_size)
        self.stride = tuple(stride)
        self.pad = pad

    def get_config(self):
        return dict(super().get_config(), num_filters=self.num_units, filter_size=self.filter_size,
                    stride=self.stride, pad=self.pad)

    def build(self, input_shape):
        self._add_variables(self.filter_size + (self.num_units, input_shape[-1]))

    def weights_now(self):
        W = tf.reshape(self.g, [1, 1, self.num_units, 1]) * tf.nn.l2_normalize(self.V, [0, 1, 3])
        return W, self.b

    def apply(self, x, weights):
        W, b = _cast(weights, x.dtype)
        s = tf.shape(x)
        out_h, out_w = s[1] * self.stride[0], s[2] * self.stride[1]
        if self.pad != 'SAME':
            out_h, out_w = out_h + self.filter_size[0] - 1, out_w + self.filter_size[1] - 1
        out = tf.nn.conv2d_transpose(x, W, tf.stack([s[0], out_h, out_w, self.num_units]),
                                     (1,) + self.stride + (1,), padding=self.pad)
        return tf.nn.bias_add(out, b)


@serializable
class GatedResnet(keras.layers.Layer):
    """Official gated_resnet: x + a * sigmoid(b) where [a, b] = conv(dropout(f(conv(f(x))
    [+ nin(f(aux))]))) [+ h @ hw]. `conv` is the layer type (down_shifted_conv2d or
    down_right_shifted_conv2d, or its name); the layers are created in the official call order, so
    `counters` (the official per-type counts so far; updated) gives them the official names."""

    def __init__(self, num_filters, conv, nonlinearity='concat_elu', dropout_p=0.5, counters=None,
                 has_aux=False, **kwargs):
        super().__init__(**kwargs)
        if counters is None:
            counters = {}
        conv = conv if isinstance(conv, str) else conv.__name__
        if conv not in SHIFTED_CONVS:
            raise ValueError('conv must be one of %s, got %r' % (sorted(SHIFTED_CONVS), conv))
        self._config = dict(num_filters=num_filters, conv=conv, nonlinearity=nonlinearity,
                            dropout_p=dropout_p, counters=dict(counters), has_aux=has_aux)
        self.num_filters = num_filters
        self.nonlinearity = NONLINEARITIES[nonlinearity]
        self.dropout_p = dropout_p
        conv = SHIFTED_CONVS[conv]
        policy = dict(dtype=self.dtype_policy)
        self.conv1 = conv(num_filters, name=next_name('conv2d', counters), **policy)
        # official nin: a Dense layer over the channels
        self.nin_aux = Dense(num_filters, name=next_name('dense', counters), **policy) if has_aux else None
        self.conv2 = conv(2 * num_filters, init_scale=0.1, name=next_name('conv2d', counters), **policy)
        self.hw_name = next_name('conditional_weights', counters)
        self.hw = None

    def get_config(self):
        return dict(super().get_config(), **self._config)

    def build(self, x_shape, aux_shape=None, h_shape=None):
        widen = 2 if self.nonlinearity is concat_elu else 1  # concat_elu doubles the channels
        self.conv1.build(tuple(x_shape[:-1]) + (widen * x_shape[-1],))
        if self.nin_aux is not None:
            self.nin_aux.build(tuple(aux_shape[:-1]) + (widen * aux_shape[-1],))
        self.conv2.build(tuple(x_shape[:-1]) + (widen * self.num_filters,))
        if h_shape is not None:
            self.hw = self.add_weight(name='hw', shape=(h_shape[-1], 2 * self.num_filters),
                                      initializer=_normal_init(), autocast=False)

    def call(self, x, aux=None, h=None, training=False, init=False, seed=None):
        """seed: None (dropout from the global random state, as the official code), or a
        stateless seed (2 integers) from which each block draws its own mask: the same seed
        gives the same masks, so a resumed run or a recomputed pass drops what the first did."""
        def conv2(c1):
            if training and self.dropout_p > 0:
                if seed is None:
                    c1 = tf.nn.dropout(c1, rate=self.dropout_p)
                else:  # conv1's official index tells the blocks apart
                    block = int(self.conv1.name.rsplit('_', 1)[1])
                    c1 = tf.nn.experimental.stateless_dropout(
                        c1, self.dropout_p, tf.random.experimental.stateless_fold_in(seed, block))
            return self.conv2(c1, init=init)
        return self.residual(x, lambda f: self.conv1(f(x), init=init), conv2,
                             lambda a: self.nin_aux(a, init=init), aux, None if h is None else self.h_term(h))

    def h_term(self, h):
        """The conditioning's term of conv2's output: h @ hw, (B, 1, 1, 2 * num_filters)."""
        return tf.matmul(h, tf.cast(self.hw, h.dtype))[:, None, None, :]

    def residual(self, x, conv1, conv2, nin, aux=None, h_term=None):
        """The official gated_resnet's arithmetic: x + a * sigmoid(b), where [a, b] =
        conv2(f(conv1(f(x)) [+ nin(f(aux))])) [+ h_term]. conv1(f) is conv1's output on f of
        the block's input, conv2(c) and nin(a) those layers' on c and a: on whole maps in
        call(), on the cached windows of one row or position in the fast sampler (then x is
        the input there)."""
        f = self.nonlinearity
        c1 = conv1(f)
        if aux is not None:
            c1 += nin(f(aux))
        c2 = conv2(f(c1))
        if h_term is not None:
            c2 += h_term
        a, b = tf.split(c2, 2, axis=-1)
        return x + a * tf.sigmoid(b)


def _crop(x, top, left, height, width):
    """x[:, top:top + height, left:left + width] as tf.slice, whose gradient (a pad) is
    much cheaper on CPU than a strided slice's."""
    out = tf.slice(x, tf.stack([0, top, left, 0]), tf.stack([-1, height, width, -1]))
    out.set_shape([x.shape[0], None, None, x.shape[3]])
    return out


def down_shift(x):
    """Shifts x one row down, filling the top row with zeros."""
    s = tf.shape(x)
    return tf.pad(_crop(x, 0, 0, s[1] - 1, s[2]), [[0, 0], [1, 0], [0, 0], [0, 0]])


def right_shift(x):
    """Shifts x one column right, filling the left column with zeros."""
    s = tf.shape(x)
    return tf.pad(_crop(x, 0, 0, s[1], s[2] - 1), [[0, 0], [0, 0], [1, 0], [0, 0]])


def down_shifted_conv2d(num_filters, filter_size=(2, 3), stride=(1, 1), **kwargs):
    """Convolution that sees only rows above (and the current row), centred horizontally
    (official down_shifted_conv2d: top padding filter_h - 1, symmetric left/right)."""
    side = (filter_size[1] - 1) // 2
    return Conv2d(num_filters, filter_size, stride,
                  pad=((filter_size[0] - 1, 0), (side, side)), **kwargs)


@serializable
class CroppedDeconv2d(Deconv2d):
    """A VALID transposed convolution cropped back to stride x input size."""

    def __init__(self, num_filters, filter_size, stride, crop_left, crop_right, **kwargs):
        kwargs.pop('pad', None)  # always VALID; get_config of Deconv2d records it
        super().__init__(num_filters, filter_size, stride, pad='VALID', **kwargs)
        self.crop = (crop_left, crop_right)

    def get_config(self):
        return dict(super().get_config(), crop_left=self.crop[0], crop_right=self.crop[1])

    def call(self, x, init=False):
        out = super().call(x, init)
        h = tf.shape(x)[1] * self.stride[0]
        w = tf.shape(x)[2] * self.stride[1]
        return _crop(out, 0, self.crop[0], h, w)


def down_shifted_deconv2d(num_filters, filter_size=(2, 3), stride=(1, 1), **kwargs):
    """Official down_shifted_deconv2d: keep the top rows, crop the sides evenly."""
    return CroppedDeconv2d(num_filters, filter_size, stride,
                            (filter_size[1] - 1) // 2, (filter_size[1] - 1) // 2, **kwargs)


def down_right_shifted_conv2d(num_filters, filter_size=(2, 2), stride=(1, 1), **kwargs):
    """Convolution that sees only pixels above and to the left
    (official down_right_shifted_conv2d)."""
    return Conv2d(num_filters, filter_size, stride,
                  pad=((filter_size[0] - 1, 0), (filter_size[1] - 1, 0)), **kwargs)


def down_right_shifted_deconv2d(num_filters, filter_size=(2, 2), stride=(1, 1), **kwargs):
    """Official down_right_shifted_deconv2d: keep the top-left corner."""
    return CroppedDeconv2d(num_filters, filter_size, stride, 0, filter_size[1] - 1, **kwargs)


SHIFTED_CONVS = {'down_shifted_conv2d': down_shifted_conv2d,
                 'down_right_shifted_conv2d': down_right_shifted_conv2d}
