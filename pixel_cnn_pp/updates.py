"""The official update rule: Adam as nn.adam_updates with train.py's settings and learning-
rate decay, Polyak averaging as tf.train.ExponentialMovingAverage, and the dynamic loss scale
of float16 training. Each works on a dict of tf.Variables (mirrored or not) and is called once
per step in cross-replica context, after the gradients are summed over replicas."""

import tensorflow as tf


def on_every_replica(var, fn, *args):
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

    def apply_gradients(self, grads, apply=True):
        """grads: {name: gradient}, already summed over replicas. Call in cross-replica
        context (or without a strategy). apply (a boolean scalar) False skips the step:
        every variable keeps its value, even with NaN gradients. The skip is in the
        coefficients (momentum 1, rate 0), not a branch: a tf.cond around the update costs
        seconds of tracing per replica."""
        on_every_replica(self.step, lambda s: s.assign_add(tf.cast(apply, tf.int64)))
        decay = tf.where(apply, tf.constant(self.lr_decay, tf.float64), tf.constant(1., tf.float64))
        on_every_replica(self.lr, lambda lr: lr.assign(lr * decay))
        on = tf.cast(apply, tf.float32)
        t = tf.maximum(tf.cast(self.step.read_value(), tf.float32), 1.)
        lr = tf.cast(self.lr.read_value(), tf.float32) * on
        mom1, mom2 = tf.where(apply, self.mom1, 1.), tf.where(apply, self.mom2, 1.)
        rate1, rate2 = (1. - self.mom1) * on, (1. - self.mom2) * on
        # the bias corrections, the same for every variable: computed once (each op of this
        # loop is repeated for each of the model's variables, and tracing costs per op)
        correction1, correction2 = 1. - tf.pow(self.mom1, t), 1. - tf.pow(self.mom2, t)

        def update(p, g, m, v):
            m_t = mom1 * m + tf.math.multiply_no_nan(g, rate1)
            v_t = mom2 * v + tf.math.multiply_no_nan(tf.square(g), rate2)
            m.assign(m_t, read_value=False)
            v.assign(v_t, read_value=False)
            return p.assign(p - lr * (m_t / correction1) / tf.sqrt(v_t / correction2 + 1e-8), read_value=False)

        for k, p in self.params.items():
            on_every_replica(p, update, grads[k], self.m[k], self.v[k])


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

    def apply(self, apply=True):
        """After a step; apply False (a skipped step) leaves the shadows as they are."""
        rate = (1. - self.decay) * tf.cast(apply, tf.float32)
        for k, s in self.shadows.items():
            on_every_replica(s, lambda s, p: s.assign_sub(rate * (s - p)), self.params[k])


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
        on_every_replica(self.scale, lambda v, x: v.assign(x), scale)
        on_every_replica(self.good_steps, lambda v, x: v.assign(x), good)
