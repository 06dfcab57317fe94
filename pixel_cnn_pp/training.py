"""The official training procedure (train.py) on tf.distribute: Adam as nn.adam_updates,
Polyak averaging, losses and gradients summed over replicas, and checkpoints."""

import json
import os

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import nn
from pixel_cnn_pp.model import PixelCNNPP

MODEL_FLAGS = ('nr_resnet', 'nr_filters', 'nr_logistic_mix', 'resnet_nonlinearity', 'energy_distance')
PRECISIONS = ('float32', 'mixed_bfloat16', 'mixed_float16')


def define_model_flags():
    """The official model flags, for train.py and sample.py."""
    from absl import flags
    flags.DEFINE_integer('nr_resnet', 5, 'Number of residual blocks per stage of the model')
    flags.DEFINE_integer('nr_filters', 160, 'Number of filters to use across the model. Higher = larger model.')
    flags.DEFINE_integer('nr_logistic_mix', 10, 'Number of logistic components in the mixture.')
    flags.DEFINE_enum('resnet_nonlinearity', 'concat_elu', ['concat_elu', 'elu', 'relu'],
                      'Which nonlinearity to use in the ResNet layers')
    flags.DEFINE_boolean('class_conditional', False, 'Condition generative model on labels?')
    flags.DEFINE_boolean('energy_distance', False, 'Use energy distance in place of likelihood')


def model_kwargs(FLAGS):
    """PixelCNNPP's arguments from the flags (dropout_p where the script has it)."""
    kwargs = {k: FLAGS[k].value for k in MODEL_FLAGS}
    if 'dropout_p' in FLAGS:
        kwargs['dropout_p'] = FLAGS.dropout_p
    return kwargs


def check_config(save_dir, config):
    """Raises if save_dir holds checkpoints of a model config other than `config`."""
    path = os.path.join(save_dir, 'config.json')
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    diff = ['%s: checkpoint %r, now %r' % (k, saved.get(k), config[k]) for k in config if saved.get(k) != config[k]]
    if diff:
        raise ValueError('the checkpoints in %s are of another model config (%s); pass the '
                         'flags they were trained with or use another --save_dir'
                         % (save_dir, '; '.join(diff)))


def model_config(model_kwargs, image_shape, num_labels):
    """What config.json records: what the weights' shapes depend on."""
    return dict({k: model_kwargs.get(k) for k in MODEL_FLAGS}, image_shape=list(image_shape),
                num_labels=num_labels)


def load_ema(model, path):
    """Loads the Polyak-averaged weights of a checkpoint of ours into a built model."""
    tf.train.Checkpoint(ema=_tf_variables(model.official_variables())).read(path).expect_partial()


def _tf_variables(keras_variables):
    """{name: the tf.Variable (or MirroredVariable) behind each Keras variable}."""
    return {name: v.value for name, v in keras_variables.items()}


def _update(var, fn, *args):
    """Runs fn(var_component, *args_components) on every replica's copy of var."""
    return tf.distribute.get_strategy().extended.update(var, fn, args=args, group=False)


class Adam(tf.Module):
    """The official nn.adam_updates as train.py calls it (mom1=0.95, mom2=0.9995), with the
    official schedule: the learning rate is multiplied by lr_decay before every step.

    m <- mom1 m + (1 - mom1) g;  v <- mom2 v + (1 - mom2) g^2;  t = 1, 2, ...
    p <- p - lr * (m / (1 - mom1^t)) / sqrt(v / (1 - mom2^t) + 1e-8)
    """

    def __init__(self, params, learning_rate=1e-3, lr_decay=0.999995, mom1=0.95, mom2=0.9995):
        super().__init__(name='adam')
        self.params = params
        self.lr_decay, self.mom1, self.mom2 = lr_decay, mom1, mom2
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
        # the official code keeps lr as a Python float (float64) and feeds it as float32
        self.lr = tf.Variable(learning_rate, dtype=tf.float64, trainable=False, name='lr')
        self.m = {k: tf.Variable(tf.zeros(p.shape), trainable=False, name='m') for k, p in params.items()}
        self.v = {k: tf.Variable(tf.zeros(p.shape), trainable=False, name='v') for k, p in params.items()}

    def apply_gradients(self, grads):
        """grads: {name: gradient}, already summed over replicas. Call in cross-replica
        context (or without a strategy)."""
        _update(self.step, lambda s: s.assign_add(1))
        _update(self.lr, lambda lr: lr.assign(lr * self.lr_decay))
        t = tf.cast(self.step.read_value(), tf.float32)
        lr = tf.cast(self.lr.read_value(), tf.float32)
        mom1, mom2 = self.mom1, self.mom2

        def update(p, g, m, v):
            m_t = m.assign(mom1 * m + (1. - mom1) * g)
            v_t = v.assign(mom2 * v + (1. - mom2) * tf.square(g))
            m_hat = m_t / (1. - tf.pow(mom1, t))
            v_hat = v_t / (1. - tf.pow(mom2, t))
            return p.assign(p - lr * m_hat / tf.sqrt(v_hat + 1e-8))

        for k, p in self.params.items():
            _update(p, update, grads[k], self.m[k], self.v[k])


class ExponentialMovingAverage(tf.Module):
    """Polyak averaging as tf.train.ExponentialMovingAverage(decay).apply in the official
    train.py: shadow <- shadow - (1 - decay) * (shadow - param) after every step."""

    def __init__(self, params, shadows, decay=0.9995):
        super().__init__(name='ema')
        self.params, self.shadows, self.decay = params, shadows, decay

    def reset(self):
        """Shadows = current parameters (see Trainer.initialize for why). Cross-replica
        context: assigning a mirrored variable there writes every copy."""
        for k, s in self.shadows.items():
            s.assign(self.params[k].read_value())

    def apply(self):
        for k, s in self.shadows.items():
            _update(s, lambda s, p: s.assign_sub((1. - self.decay) * (s - p)), self.params[k])


class DynamicLossScale(tf.Module):
    """Dynamic loss scaling for float16 training (as keras.optimizers.LossScaleOptimizer):
    the loss is multiplied by `scale` before the backward pass and the gradients divided by
    it; a step whose gradients are not finite is skipped and halves the scale, and 2000
    finite steps in a row double it."""

    def __init__(self, initial_scale=2. ** 15, growth_steps=2000):
        super().__init__(name='loss_scale')
        self.growth_steps = growth_steps
        self.scale = tf.Variable(initial_scale, trainable=False, name='scale')
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name='good_steps')

    def update(self, finite):
        """After a step; cross-replica context."""
        grow = tf.logical_and(finite, self.good_steps.read_value() + 1 >= self.growth_steps)
        scale = tf.where(grow, 2. * self.scale, tf.where(finite, self.scale, self.scale / 2.))
        good = tf.where(tf.logical_and(finite, tf.logical_not(grow)), self.good_steps + 1, 0)
        _update(self.scale, lambda v, x: v.assign(x), scale)
        _update(self.good_steps, lambda v, x: v.assign(x), good)


class Trainer:
    """A PixelCNNPP, its Polyak-averaged copy (used for evaluation and sampling), the
    official Adam, and the distributed train and test steps. `model_kwargs` are
    PixelCNNPP's arguments; `num_labels` > 0 conditions on one-hot labels.

    precision='mixed_bfloat16' or 'mixed_float16' trains in that compute dtype (variables,
    Adam, EMA and the loss stay float32; float16 adds dynamic loss scaling); evaluation
    uses the float32 EMA model in every case."""

    def __init__(self, strategy, model_kwargs, image_shape, num_labels=0, learning_rate=1e-3,
                 lr_decay=0.999995, polyak_decay=0.9995, jit_compile=False, precision='float32'):
        if precision not in PRECISIONS:
            raise ValueError('precision must be one of %s, got %r' % (PRECISIONS, precision))
        self.strategy = strategy
        self.model_kwargs = dict(model_kwargs)
        self.image_shape = tuple(image_shape)
        self.num_labels = num_labels
        self.energy_distance = self.model_kwargs.get('energy_distance', False)
        with strategy.scope():
            self.model = PixelCNNPP(**self.model_kwargs, dtype=precision)
            self.ema_model = PixelCNNPP(**dict(self.model_kwargs, dropout_p=0.))
            x = tf.zeros((1,) + self.image_shape)
            for m in (self.model, self.ema_model):
                m(x, h=self.one_hot(tf.zeros([1], tf.int32)))
            self.params = _tf_variables(self.model.official_variables())
            self.shadows = _tf_variables(self.ema_model.official_variables())
            self.optimizer = Adam(self.params, learning_rate, lr_decay)
            self.ema = ExponentialMovingAverage(self.params, self.shadows, polyak_decay)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name='epoch')
            self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name='epoch_step')
            # in every precision, so that checkpoints resume in any other
            self.loss_scale = DynamicLossScale()
        self.scale_loss = precision == 'mixed_float16'
        self.checkpoint = tf.train.Checkpoint(
            params=self.params, ema=self.shadows, adam=self.optimizer,
            epoch=self.epoch, epoch_step=self.epoch_step, loss_scale=self.loss_scale)
        self._train_step = tf.function(self._distributed_train_step, autograph=False)
        self._test_step = tf.function(self._distributed_test_step, autograph=False)
        self._loss_and_grads = tf.function(self._loss_and_grads_fn, jit_compile=jit_compile, autograph=False)

    # ------------------------------------------------------------------ pieces

    def one_hot(self, y):
        return tf.one_hot(y, self.num_labels) if self.num_labels else None

    def loss(self, model, x, y, training):
        """Per-image loss in nats: the discretized logistic mixture NLL, or with
        energy_distance the official energy distance of each image's samples."""
        out = model(x, h=self.one_hot(y), training=training)
        if self.energy_distance:
            return tf.stack([nn.energy_distance(x[i:i + 1], [s[i:i + 1] for s in out])
                             for i in range(x.shape[0])])
        return nn.discretized_mix_logistic_loss(x, out, sum_all=False)

    @property
    def dims(self):
        return int(np.prod(self.image_shape))

    def bits_per_dim(self, nats, num_images):
        """The official conversion: nats / (ln 2 * H * W * C * images)."""
        return nats / (np.log(2.) * self.dims * num_images)

    # ------------------------------------------------------------------ init

    def initialize(self, x_init, y_init=None):
        """The official data-dependent init on one batch (with dropout, as train.py), then
        the EMA shadows start from the initialised weights. (The official shadows start from
        the values before this init, g = 1 and b = 0, so its early test bits/dim and samples
        come from a mostly uninitialised network until the average forgets them.)"""
        x_init = tf.convert_to_tensor(x_init, tf.float32)
        h = self.one_hot(tf.convert_to_tensor(y_init)) if self.num_labels else None
        with self.strategy.scope():
            self.model(x_init, h=h, training=True, init=True)
            self.ema.reset()

    # ------------------------------------------------------------------ steps

    def _loss_and_grads_fn(self, x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(self.loss(self.model, x, y, training=True))
            scaled = loss * self.loss_scale.scale if self.scale_loss else loss
        grads = tape.gradient(scaled, list(self.params.values()))
        if self.scale_loss:
            grads = [g / self.loss_scale.scale for g in grads]
        return loss, grads

    def _distributed_train_step(self, batch):
        def replica_step(x, y, weight):
            del weight  # training batches are always full
            bad_pixels = tf.reduce_sum(tf.cast(~tf.math.is_finite(x), tf.float32))
            loss, grads = self._loss_and_grads(x, y)
            ctx = tf.distribute.get_replica_context()
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads]) \
                if self.scale_loss else tf.constant(True)

            def apply(strategy, grads, finite):
                def step():
                    self.optimizer.apply_gradients(dict(zip(self.params, grads)))
                    self.ema.apply()
                    return tf.constant(True)

                if not self.scale_loss:
                    step()
                else:  # a step whose scaled gradients overflowed is skipped (on every replica:
                    # the summed gradients are the same everywhere)
                    finite = strategy.experimental_local_results(finite)[0]
                    tf.cond(finite, step, lambda: tf.constant(False))
                    self.loss_scale.update(finite)
                _update(self.epoch_step, lambda s: s.assign_add(1))

            ctx.merge_call(apply, args=(grads, finite))
            return loss, bad_pixels

        loss, bad_pixels = self.strategy.run(replica_step, args=batch)
        sum_ = tf.distribute.ReduceOp.SUM
        return self.strategy.reduce(sum_, loss, axis=None), self.strategy.reduce(sum_, bad_pixels, axis=None)

    def _distributed_test_step(self, batch):
        def replica_step(x, y, weight):
            return tf.reduce_sum(self.loss(self.ema_model, x, y, training=False) * weight), \
                tf.reduce_sum(weight)

        nats, count = self.strategy.run(replica_step, args=batch)
        sum_ = tf.distribute.ReduceOp.SUM
        return self.strategy.reduce(sum_, nats, axis=None), self.strategy.reduce(sum_, count, axis=None)

    def train_step(self, batch):
        """One official step on a distributed batch; returns (summed loss in nats, whether
        the input was finite)."""
        loss, bad_pixels = self._train_step(batch)
        return float(loss), float(bad_pixels) == 0.

    def evaluate(self, batches):
        """Test bits/dim of the EMA weights over the batches (every image counted once)."""
        nats = count = 0.
        for batch in batches:
            n, c = self._test_step(batch)
            nats, count = nats + float(n), count + float(c)
        return self.bits_per_dim(nats, count)

    # ------------------------------------------------------------------ checkpoints

    def config(self):
        return model_config(self.model_kwargs, self.image_shape, self.num_labels)

    def check_config(self, save_dir):
        check_config(save_dir, self.config())

    def write_config(self, save_dir):
        tmp = os.path.join(save_dir, 'config.json.tmp')
        with open(tmp, 'w') as f:
            json.dump(self.config(), f, indent=1)
        os.replace(tmp, os.path.join(save_dir, 'config.json'))

    def restore_ema(self, path):
        """Loads only the EMA weights of a checkpoint of ours (for evaluation, sampling)."""
        load_ema(self.ema_model, path)
