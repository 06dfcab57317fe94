"""The PixelCNN++ network (the official pixel_cnn_pp/model.py model_spec)."""

import weakref

import tensorflow as tf
import keras

from pixel_cnn_pp import config, fitting, nn
from pixel_cnn_pp.images import scale

ENERGY_DISTANCE_SAMPLES = 10
_memos = weakref.WeakKeyDictionary()  # model -> {key: what PixelCNNPP.memo made}


class Plan:
    """model_spec's layers in the official order, made once: `up_pass` and `down_pass`, each
    a tuple of (u layer, ul layer) pairs, gated resnets and, between the levels, the stride-2
    convolutions (up) or the transposed ones (down). What each layer reads follows from
    model_spec's two lists (passes()): the up pass pushes every output, the down
    pass pops the short-cuts. A plain object: Keras tracks the layers once, where the model
    holds them (their attributes are the .keras file's paths)."""

    def __init__(self, up_pass, down_pass):
        self.up_pass, self.down_pass = tuple(up_pass), tuple(down_pass)

    @classmethod
    def make(cls, nr_resnet, resnet, resample):
        """The layers, made in model_spec's order: per level of the up pass nr_resnet pairs
        resnet('u', has_aux=False), resnet('ul', has_aux=True), after the first level preceded
        by the pair resample('conv2d') (stride 2); the down pass alike with nr_resnet, then
        nr_resnet + 1 pairs (both with aux) and resample('deconv2d')."""
        up_pass, down_pass = [], []
        for stage in range(3):
            if stage > 0:
                up_pass.append(resample('conv2d'))
            up_pass += [(resnet('u', False), resnet('ul', True)) for _ in range(nr_resnet)]
        for stage in range(3):
            if stage > 0:
                down_pass.append(resample('deconv2d'))
            down_pass += [(resnet('u', True), resnet('ul', True)) for _ in range(nr_resnet + (stage > 0))]
        return cls(up_pass, down_pass)

    def paths(self):
        """{model attribute: tuple of layers}: where the model holds each layer (the .keras
        file's paths): per level the u and ul blocks of each pass, and the resamplings."""
        def levels(pairs, side):
            out, level = [], []
            for pair in pairs:
                if isinstance(pair[0], nn.GatedResnet):
                    level.append(pair[side])
                else:
                    out.append(tuple(level))
                    level = []
            return tuple(out + [tuple(level)])

        def resamplings(pairs):
            return tuple(pair for pair in pairs if not isinstance(pair[0], nn.GatedResnet))
        return dict(up_u=levels(self.up_pass, 0), up_ul=levels(self.up_pass, 1),
                    down_u=levels(self.down_pass, 0), down_ul=levels(self.down_pass, 1),
                    downsample=resamplings(self.up_pass), upsample=resamplings(self.down_pass))

    def layers(self):
        return [layer for pair in self.up_pass + self.down_pass for layer in pair]

    def passes(self, u, ul, gated_resnet, resample):
        """model_spec's up and down passes over the layers, from the streams' first maps u
        (official: the stream for pixels above) and ul (above and to the left); returns the
        last ul. gated_resnet(layer, x, *aux) and resample(layer, x) compute a layer's
        output: maps in call(), the fast sampler's caches in its schedule, so that both
        follow the one order and the one set of short-cuts (PixelCNNPP.plan.passes)."""
        u_list, ul_list = [u], [ul]
        for u_layer, ul_layer in self.up_pass:  # up pass
            if isinstance(u_layer, nn.GatedResnet):
                u_list.append(gated_resnet(u_layer, u_list[-1]))
                ul_list.append(gated_resnet(ul_layer, ul_list[-1], u_list[-1]))
            else:  # stride 2
                u_list.append(resample(u_layer, u_list[-1]))
                ul_list.append(resample(ul_layer, ul_list[-1]))
        u, ul = u_list.pop(), ul_list.pop()  # down pass
        for u_layer, ul_layer in self.down_pass:
            if isinstance(u_layer, nn.GatedResnet):
                u = gated_resnet(u_layer, u, u_list.pop())
                ul = gated_resnet(ul_layer, ul, u, ul_list.pop())  # official: tf.concat([u, ul_list.pop()], 3)
            else:  # transposed, stride 2
                u, ul = resample(u_layer, u), resample(ul_layer, ul)
        assert not u_list and not ul_list
        return ul


def check_h_shape(num_labels, h_shape):
    """h's shape against the model's num_labels K: None if K = 0, else (B, K); a ConfigError
    naming h otherwise."""
    K = num_labels
    if K and h_shape is None:
        raise config.ConfigError('this model is conditioned on %d labels: pass {h:name} (B, %d)' % (K, K), 'h')
    if not K and h_shape is not None:
        raise config.ConfigError('this model is unconditional (num_labels=0): {h:name} must be None', 'h')
    if h_shape is not None and (len(h_shape) != 2 or h_shape[-1] != K):
        raise config.ConfigError('{h:name} must be (B, %d) (num_labels=%d), got shape %s' % (K, K, tuple(h_shape)),
                                 'h')


def _head(channels, nr_logistic_mix, energy_distance, counters, dtype):
    """The output layers: official x_out = nin(tf.nn.elu(ul), 10 * nr_logistic_mix) for a
    mixture (3 * nr_logistic_mix for grayscale); the energy-distance head's four nin layers
    (Dense over the channels) otherwise."""
    def dense(units, **kwargs):
        return nn.Dense(units, name=nn.next_name('dense', counters), dtype=dtype, **kwargs)
    if energy_distance:
        return dense(64), dense(64), dense(64), dense(channels, init_scale=0.1)
    return (dense(nn.num_mixture_params(channels) * nr_logistic_mix),)


def _energy_distance_samples(head, ul, init, seed):
    """The energy-distance head's ENERGY_DISTANCE_SAMPLES images from the last ul, each with
    fresh uniform noise (stateless from seed if given)."""
    f_in, f_noise, f_mid, f_out = head
    f = tf.tile(f_in(tf.nn.elu(ul), init=init), [ENERGY_DISTANCE_SAMPLES, 1, 1, 1])
    noise_shape = tf.concat([tf.shape(f)[:3], [4]], 0)
    noise = tf.random.uniform(noise_shape, -1., 1., dtype=f.dtype) if seed is None else \
        tf.random.stateless_uniform(noise_shape, tf.random.experimental.stateless_fold_in(seed, -1),
                                    -1., 1., dtype=f.dtype)
    f += f_noise(noise, init=init)
    f = f_mid(nn.concat_elu(f), init=init)
    x_sample = tf.tanh(tf.cast(f_out(nn.concat_elu(f), init=init), tf.float32))
    return tf.split(x_sample, ENERGY_DISTANCE_SAMPLES, axis=0)


@nn.serializable
class PixelCNNPP(fitting.KerasTraining, keras.Model):
    """PixelCNN++ as a Keras model: model(x, h=None, training=False, init=False) maps
    images x (B,H,W,C) in [-1, 1], C = 3 or 1, H and W divisible by 4, to the
    parameters of a discretized logistic mixture per pixel (B,H,W,10*nr_logistic_mix
    for RGB, 3*nr_logistic_mix for grayscale), or with energy_distance=True to a list
    of 10 sample images. h is an optional (B, K) conditioning vector; training=True
    applies dropout (with `seed`, 2 integers, from that stateless seed); init=True runs the
    data-dependent initialisation on this batch.
    dtype='mixed_bfloat16' or 'mixed_float16' computes in that dtype; the weights and the
    outputs stay float32.

    image_shape (H, W, C) is the size the model was trained on, the default of sampling and
    export (32x32 with the model's channels if not given); the network itself takes any
    H and W divisible by 4. `num_labels` is the size of h, the one-hot labels of a
    class-conditional model; 0 (the default): unconditional, h must be None.

    Sub-layers are created in the order model_spec calls them and named as its
    variable scopes (conv2d_N, dense_N, deconv2d_N, conditional_weights_N), which
    `official_variables()` exposes and the official-checkpoint loader relies on.
    """

    def __init__(self, nr_resnet=5, nr_filters=160, nr_logistic_mix=10,
                 resnet_nonlinearity='concat_elu', dropout_p=0.5, energy_distance=False,
                 image_shape=None, num_labels=0, **kwargs):
        super().__init__(**kwargs)
        # the rules of the arguments are ModelConfig's (a ConfigError naming the argument)
        checked = config.ModelConfig(nr_resnet=nr_resnet, nr_filters=nr_filters, nr_logistic_mix=nr_logistic_mix,
                                     resnet_nonlinearity=resnet_nonlinearity, energy_distance=energy_distance,
                                     image_shape=image_shape or config.ModelConfig.image_shape,
                                     num_labels=num_labels, dropout_p=dropout_p)
        if image_shape is not None:
            image_shape = checked.image_shape
        for field in config.field_names(config.ModelConfig):
            if field != 'image_shape':
                setattr(self, field, getattr(checked, field))
        self._image_shape = image_shape  # None: 32x32 with the channels of the first batch
        self.channels = None
        self._counters = {}

        c = self._counters
        F = nr_filters
        p = dict(dtype=self.dtype_policy)  # e.g. 'mixed_bfloat16': every layer computes in it

        def resnet(stream, has_aux):  # the u stream's blocks shift down, ul's down and right
            conv = 'down_shifted_conv2d' if stream == 'u' else 'down_right_shifted_conv2d'
            return nn.GatedResnet(F, conv, resnet_nonlinearity, dropout_p, c, has_aux=has_aux, **p)

        # The plan, in the order model_spec creates the layers (and so names them): the input
        # convolutions, then per level nr_resnet (u, ul) gated resnets, stride-2 convs between;
        # down: nr_resnet, then nr_resnet + 1 blocks, transposed convs between.
        self.u_in = nn.down_shifted_conv2d(F, (2, 3), name=nn.next_name('conv2d', c), **p)
        self.ul_in_down = nn.down_shifted_conv2d(F, (1, 3), name=nn.next_name('conv2d', c), **p)
        self.ul_in_right = nn.down_right_shifted_conv2d(F, (2, 1), name=nn.next_name('conv2d', c), **p)
        self._plan = Plan.make(nr_resnet, resnet, lambda kind: (
            getattr(nn, 'down_shifted_' + kind)(F, stride=(2, 2), name=nn.next_name(kind, c), **p),
            getattr(nn, 'down_right_shifted_' + kind)(F, stride=(2, 2), name=nn.next_name(kind, c), **p)))
        # The layers' attributes are the .keras file's paths. Tuples, not lists: Keras 3 wraps
        # lists in a type tf.train.Checkpoint skips.
        for name, layers in self._plan.paths().items():
            setattr(self, name, layers)
        self.head = None

    @property
    def plan(self):
        """The Plan: model_spec's layers in order, made once."""
        return self._plan

    def get_config(self):
        fields = {f: getattr(self, f) for f in config.field_names(config.ModelConfig)}
        return dict(super().get_config(), **dict(fields, image_shape=self._image_shape))

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def build_from_config(self, config):
        """Keras' load_model: a .keras file written before the constructor took num_labels
        says it only by the h its model was built with."""
        h_shape = config.get('shapes_dict', {}).get('h_shape')
        if h_shape is not None and not self.num_labels:
            self.num_labels = int(h_shape[-1])
        with nn.weights_read_next():
            super().build_from_config(config)

    @property
    def image_shape(self):
        if self._image_shape is not None:
            return self._image_shape
        return None if self.channels is None else (32, 32, self.channels)

    def build(self, x_shape, h_shape=None):
        """Creates every weight: the channels of x fix their shapes, num_labels those of the
        conditioning weights (plan.passes() over the maps' shapes builds each layer, in the
        official order)."""
        channels = x_shape[-1]
        config.check_channels(channels, 'x', x_shape)
        if self._image_shape is not None and self._image_shape[2] != channels:
            raise config.ConfigError('{x:name} has %d channels, but {image_shape}' % channels, 'x',
                                     image_shape=self._image_shape)
        if h_shape is not None:  # (num_labels says it in any case)
            check_h_shape(self.num_labels, h_shape)
        self.channels = channels
        self.head = _head(channels, self.nr_logistic_mix, self.energy_distance, self._counters, self.dtype_policy)
        F, h = self.nr_filters, (None, self.num_labels) if self.num_labels else None

        def gated_resnet(layer, x, *aux):
            layer.build(x, (None, None, None, sum(a[-1] for a in aux)) if aux else None, h)
            return x

        def resample(layer, x):
            layer.build(x)
            return x
        x_pad = (None, None, None, channels + 1)
        for layer in (self.u_in, self.ul_in_down, self.ul_in_right):
            layer.build(x_pad)
        self.plan.passes((None, None, None, F), (None, None, None, F), gated_resnet, resample)
        inputs = [F] if not self.energy_distance else [F, 4, 128, 128]  # concat_elu doubles 64
        for layer, width in zip(self.head, inputs):
            layer.build((None, None, None, width))

    def require(self, use=None):
        """The one check of what a model must be before it is used: built (called once on a
        batch, or loaded) and, for a use of its likelihood (`use` completes "has no likelihood
        to ...": 'score with', 'code with'), a mixture model, which the energy-distance head
        is not. A ConfigError otherwise."""
        if not self.built or self.channels is None:
            raise config.ConfigError('the model is not built yet: load it or call it once on a batch first')
        if use and self.energy_distance:
            raise config.ConfigError('an energy-distance model has no likelihood to %s' % use)

    def memo(self, key, make):
        """make(), made once per key for this model and kept while it lives: the package's one
        store of the model's samplers and compiled functions (which must hold the model by a
        weak reference, or it would never be freed)."""
        made = _memos.setdefault(self, {})
        if key not in made:
            made[key] = make()
        return made[key]

    def call(self, x, h=None, training=False, init=False, seed=None, recompute=False):
        """seed: the stateless dropout seed (see GatedResnet). recompute=True keeps none of a
        gated ResNet block's inner activations for the backward pass, which recomputes them
        (tf.recompute_grad): the same numbers for about half the memory of a training step.
        With dropout it needs the seed, so that the recomputed pass drops what the first did.
        uint8 images are scaled to [-1, 1] here (make_feed_dict's scaling)."""
        x = tf.cast(scale(x) if tf.convert_to_tensor(x).dtype == tf.uint8 else x, self.compute_dtype)
        h = None if h is None else tf.cast(h, x.dtype)
        config.check_images(x.shape, 'x', (self.channels,))
        check_h_shape(self.num_labels, None if h is None else h.shape)
        if h is not None and x.shape[0] is not None and h.shape[0] is not None and x.shape[0] != h.shape[0]:
            raise config.ConfigError('{h:name} has batch size %d but {x:name} has %d' % (h.shape[0], x.shape[0]),
                                     'h', 'x')
        if recompute and training and self.dropout_p > 0 and seed is None:
            raise ValueError('recompute=True with dropout needs a stateless seed')

        def gated_resnet(layer, x, *aux):
            # aux: the short-cut input, or its parts, concatenated here so that recompute
            # keeps the parts (alive anyway) and not their concatenation
            def run(x, *aux):
                a = tf.concat(aux, axis=3) if len(aux) > 1 else (aux or (None,))[0]
                return layer(x, a, h=h, training=training, init=init, seed=seed)
            return tf.recompute_grad(run)(x, *aux) if recompute and not init else run(x, *aux)

        x_pad = tf.concat([x, tf.ones_like(x[..., :1])], axis=3)  # tells image from padding
        u = nn.down_shift(self.u_in(x_pad, init=init))
        ul = nn.down_shift(self.ul_in_down(x_pad, init=init)) + nn.right_shift(self.ul_in_right(x_pad, init=init))
        ul = self.plan.passes(u, ul, gated_resnet, lambda layer, x: layer(x, init=init))

        # The outputs are float32 under any precision policy, so the loss is float32.
        if not self.energy_distance:
            return tf.cast(self.head[0](tf.nn.elu(ul), init=init), tf.float32)
        return _energy_distance_samples(self.head, ul, init, seed)

    def _blocks_in_order(self):
        """The top-level layers and gated resnets, in the order model_spec creates them."""
        self.require()
        return [self.u_in, self.ul_in_down, self.ul_in_right] + self.plan.layers() + list(self.head)

    def weight_norm_layers(self):
        """Every weight-normalised layer (conv2d, deconv2d, dense), in creation order."""
        return [sub for layer in self._blocks_in_order() for sub in _weight_norm_parts(layer)]

    def official_variables(self):
        """{official variable name: variable}, e.g. 'conv2d_0/V', 'conditional_weights_3/hw',
        in the official creation order (the order of tf.trainable_variables())."""
        out = {}
        for layer in self._blocks_in_order():
            for sub in _weight_norm_parts(layer):
                out.update({'%s/%s' % (sub.name, v): getattr(sub, v) for v in ('V', 'g', 'b')})
            if isinstance(layer, nn.GatedResnet) and layer.hw is not None:  # after its conv2d, as officially
                out[layer.hw_name + '/hw'] = layer.hw
        return out


def _weight_norm_parts(layer):
    """A gated resnet's weight-normalised layers (conv1, nin_aux if any, conv2), in creation
    order; any other layer itself."""
    if not isinstance(layer, nn.GatedResnet):
        return [layer]
    return [sub for sub in (layer.conv1, layer.nin_aux, layer.conv2) if sub is not None]
