"""The official training and test steps (train.py) on tf.distribute: the loss of a batch,
its gradients summed over replicas and one step of the update rule (updates.py), a step that
is not finite never applied; the test bits/dim of the Polyak-averaged model."""

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import nn, scoring, updates
from pixel_cnn_pp.config import ModelConfig, Settings, TrainConfig
from pixel_cnn_pp.images import scale

# The groups of a training checkpoint that hold weights (checkpoints.py reads them).
PARAMS, EMA = 'params', 'ema'


def epoch_order(num_images, seed, epoch):
    """The training set's order in `epoch`: a permutation fixed by (seed, epoch), so a
    resumed run sees the same batches as an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(num_images)


def mutate(x, rate, seed):
    """Scaled images x with each sub-pixel replaced, with probability `rate`, by a uniform
    value in 0..255 (scaled), as Ren et al. 2019 perturb the inputs of a background model.
    seed: a stateless seed (2 integers)."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    replace = tf.random.stateless_uniform(tf.shape(x), seeds[0]) < rate
    values = tf.random.stateless_uniform(tf.shape(x), seeds[1], 0, 256, dtype=tf.int32)
    return tf.where(replace, scale(values), x)


class Diverged(Settings, FloatingPointError):
    """A training step whose loss or gradients are not finite (not applied); its message
    names the settings to change (config.Settings)."""


def _tf_variables(keras_variables):
    """{name: the tf.Variable (or MirroredVariable) behind each Keras variable}."""
    return {name: v.value for name, v in keras_variables.items()}


def image_loss(model, x, h, training, seed=None, recompute=False):
    """Per-image loss in nats: the discretized logistic mixture NLL, or for an
    energy-distance model the official energy distance of each image's samples. seed: the
    model's stateless dropout seed; recompute: see PixelCNNPP.call."""
    out = model(x, h=h, training=training, seed=seed, recompute=recompute)
    if model.energy_distance:
        return tf.stack([nn.energy_distance(x[i:i + 1], [s[i:i + 1] for s in out])
                         for i in range(x.shape[0])])
    return nn.discretized_mix_logistic_loss(x, out, sum_all=False)


class Evaluator:
    """Test bits/dim of a model over distributed batches (x, y, weight) of data.test_batches:
    the official test loss, every image counted once. Build the model in strategy.scope()."""

    def __init__(self, strategy, model):
        self.strategy, self.model = strategy, model
        self._step = tf.function(self._distributed_step, autograph=False)

    def _distributed_step(self, batch):
        def replica_step(x, y, weight):
            h = tf.one_hot(y, self.model.num_labels) if self.model.num_labels else None
            return tf.reduce_sum(image_loss(self.model, x, h, training=False) * weight), \
                tf.reduce_sum(weight)

        nats, count = self.strategy.run(replica_step, args=batch)
        sum_ = tf.distribute.ReduceOp.SUM
        return self.strategy.reduce(sum_, nats, axis=None), self.strategy.reduce(sum_, count, axis=None)

    def evaluate(self, batches, image_shape, stop=None):
        """The test bits/dim; stop: a callable asked before each batch, whose true answer
        abandons the evaluation (evaluate returns None)."""
        nats = count = 0.
        for batch in batches:
            if stop is not None and stop():
                return None
            n, c = self._step(batch)
            nats, count = nats + float(n), count + float(c)
        return float(scoring.bits_per_dim(-nats / count, image_shape))


def accumulate(loss_and_grads, x, y, seed, K, params):
    """The loss and gradients of a replica's batch as the sum over K micro-batches, run one
    after the other (a while loop, so that only one micro-batch's activations are alive at a
    time); micro-batch k drops out with seed folded with k. loss_and_grads(x, y, seed)
    computes one micro-batch's, for the variables `params`."""
    xs = tf.reshape(x, [K, x.shape[0] // K] + x.shape[1:].as_list())
    ys = tf.reshape(y, [K, -1])

    def body(k, loss, grads):
        l, g = loss_and_grads(tf.gather(xs, k), tf.gather(ys, k), tf.random.experimental.stateless_fold_in(seed, k))
        return k + 1, loss + l, [a + b for a, b in zip(grads, g)]

    zeros = [tf.zeros(p.shape) for p in params]
    _, loss, grads = tf.while_loop(lambda k, *_: k < K, body, [tf.constant(0), tf.constant(0.), zeros],
                                   parallel_iterations=1)
    return loss, grads


def check_step(step, loss, bad_pixels, finite, learning_rate, train_config):
    """The error of a training step not applied (None if it was): a batch with NaN or inf
    pixels (FloatingPointError), a loss or gradients not finite (Diverged, naming the
    settings to change; under float16 loss scaling gradients that are not finite are an
    overflow, which the loss scale handles). learning_rate: the step's."""
    mixed = train_config.precision != 'float32'
    if bad_pixels:
        return FloatingPointError('the training batch of step %d holds %d NaN or inf pixel values; the step was '
                                  'not applied' % (step, bad_pixels))
    if not np.isfinite(loss) or not (finite or train_config.precision == 'mixed_float16'):
        return Diverged(
            'training diverged at step %d: the loss is %s (%s), at learning rate %.3g; the step was not applied. '
            'Try a lower {learning_rate:name}%s.' % (step, loss, 'gradients finite' if finite else
                                                     'gradients not finite', learning_rate,
                                                     ', or {precision=_float32}' if mixed else ''),
            learning_rate=train_config.learning_rate, precision=train_config.precision, _float32='float32')
    return None


class Trainer:
    """The training of `model`, a PixelCNNPP with its image_shape (built or not), which holds
    the Polyak average of the weights (what evaluation and sampling use), while the raw
    weights train in a twin of it (`.model`, starting from the model's weights): the official
    Adam, the average, and the distributed train and test steps under `strategy` (default: the
    current one), with the step's settings of `train_config` (a config.TrainConfig, whose fields
    say what each does; its batch and epoch settings are the run's, not the Trainer's).

    (Keras' fit: the model being fitted is `model`, so that what it computes with are the
    weights the official code evaluates with.)"""

    def __init__(self, model, train_config=TrainConfig(), strategy=None):
        self.model_config, self.train_config = ModelConfig.of_model(model), train_config
        self.strategy = strategy = strategy or tf.distribute.get_strategy()
        c = train_config
        with strategy.scope():
            x = tf.zeros((1,) + self.model_config.image_shape)
            h = self.one_hot(tf.zeros([1], tf.int32))
            if not model.built:
                model(x, h=h)
            self.ema_model = model
            self.model = type(model)(**self.model_config.kwargs(), dtype=c.precision)
            self.model(x, h=h)
            self.params = _tf_variables(self.model.official_variables())
            self.shadows = _tf_variables(self.ema_model.official_variables())
            for k, p in self.params.items():
                p.assign(self.shadows[k].read_value())
            self.optimizer = updates.Adam(self.params, c.learning_rate, c.lr_decay)
            self.ema = updates.ExponentialMovingAverage(self.params, self.shadows, c.polyak_decay)
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name='epoch')
            self.epoch_step = tf.Variable(0, dtype=tf.int64, trainable=False, name='epoch_step')
            # in every precision, so that checkpoints resume in any other
            self.loss_scale = updates.DynamicLossScale()
        self.scale_loss = c.precision == 'mixed_float16'
        self.checkpoint = tf.train.Checkpoint(
            **{PARAMS: self.params, EMA: self.shadows}, adam=self.optimizer,
            epoch=self.epoch, epoch_step=self.epoch_step, loss_scale=self.loss_scale)
        self._train_step = tf.function(self._distributed_train_step, autograph=False)
        self.evaluator = Evaluator(strategy, self.ema_model)
        self._loss_and_grads = tf.function(self._loss_and_grads_fn, jit_compile=c.xla, autograph=False)

    # ------------------------------------------------------------------ pieces

    def step(self):
        """The updates made so far (the official code's step, Adam's t)."""
        return int(self.optimizer.step.numpy())

    def one_hot(self, y):
        K = self.model_config.num_labels
        return tf.one_hot(y, K) if K else None

    def bits_per_dim(self, nats, num_images):
        return float(scoring.bits_per_dim(-nats / num_images, self.model_config.image_shape))

    # ------------------------------------------------------------------ init

    def initialize(self, x_init, y_init=None):
        """The official data-dependent init on one batch (with dropout, as train.py), then
        the EMA shadows start from the initialised weights; its dropout masks are those of the
        run's seed, so that fit and train.py start alike. (The official shadows start from
        the values before this init, g = 1 and b = 0, so its early test bits/dim and samples
        come from a mostly uninitialised network until the average forgets them.)"""
        x_init = tf.convert_to_tensor(x_init, tf.float32)
        h = self.one_hot(tf.convert_to_tensor(y_init)) if self.model_config.num_labels else None
        seed = tf.constant([self.train_config.seed, -1], tf.int64)  # its dropout: a function of the seed
        with self.strategy.scope():
            self.model(x_init, h=h, training=True, init=True, seed=seed)
            self.ema.reset()

    # ------------------------------------------------------------------ steps

    def _loss_and_grads_fn(self, x, y, seed):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(image_loss(self.model, x, self.one_hot(y), training=True, seed=seed,
                                            recompute=self.train_config.recompute))
            objective = loss
            c = self.train_config
            if c.l2_weight:  # once in the gradients summed over replicas and micro-batches
                objective += c.l2_weight / (self.strategy.num_replicas_in_sync * c.accum_steps) * tf.add_n(
                    [tf.reduce_sum(tf.square(p)) for p in self.params.values()])
            scaled = objective * self.loss_scale.scale if self.scale_loss else objective
        grads = tape.gradient(scaled, list(self.params.values()))
        if self.scale_loss:
            grads = [g / self.loss_scale.scale for g in grads]
        return loss, grads

    def replica_step(self, x, y, optimizer=None):
        """One official step on this replica's batch, in replica context (strategy.run here,
        or Keras' fit): its loss and gradients, summed over the replicas, then the update and
        the Polyak average. A step whose loss or gradients are not finite is not applied (on
        any replica: the summed values are the same everywhere); under float16 loss scaling
        that is an overflow and halves the scale. optimizer: a Keras optimizer in place of the
        official Adam (Keras' compile(optimizer=...)), which sums the gradients itself and
        applies every step. Returns (this replica's loss in nats, its NaN or inf pixels,
        whether the step was finite)."""
        bad_pixels = tf.reduce_sum(tf.cast(~tf.math.is_finite(x), tf.float32))
        ctx = tf.distribute.get_replica_context()
        # one stateless stream per step and replica: a resumed run draws what the
        # uninterrupted one did
        stream = tf.stack([tf.constant(self.train_config.seed, tf.int64), self.optimizer.step *
                           ctx.num_replicas_in_sync + tf.cast(ctx.replica_id_in_sync_group, tf.int64)])
        if self.train_config.mutation_rate:
            x = mutate(x, self.train_config.mutation_rate, stream)
        dropout_seed = tf.random.experimental.stateless_fold_in(stream, 1)
        if self.train_config.accum_steps == 1:
            loss, grads = self._loss_and_grads(x, y, dropout_seed)
        else:
            loss, grads = accumulate(self._loss_and_grads, x, y, dropout_seed, self.train_config.accum_steps,
                                     self.params.values())
        if optimizer is not None:
            optimizer.apply(grads, [v for v in self.model.official_variables().values()])
            finite = tf.constant(True)
        else:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            total_loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)
            finite = tf.logical_and(tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads]),
                                    tf.math.is_finite(total_loss))

        def apply(strategy, grads, finite):
            finite = strategy.experimental_local_results(finite)[0]
            if optimizer is None:
                self.optimizer.apply_gradients(dict(zip(self.params, grads)), finite)
            else:  # the step and the stream go on
                updates.on_every_replica(self.optimizer.step, lambda s: s.assign_add(1))
            self.ema.apply(finite)
            if self.scale_loss:
                self.loss_scale.update(finite)
            updates.on_every_replica(self.epoch_step, lambda s: s.assign_add(1))

        ctx.merge_call(apply, args=(grads if optimizer is None else (), finite))
        return loss, bad_pixels, finite

    def _distributed_train_step(self, batch):
        def replica_step(x, y, weight):
            del weight  # training batches are always full
            return self.replica_step(x, y)

        loss, bad_pixels, finite = self.strategy.run(replica_step, args=batch)
        sum_ = tf.distribute.ReduceOp.SUM
        return (self.strategy.reduce(sum_, loss, axis=None), self.strategy.reduce(sum_, bad_pixels, axis=None),
                self.strategy.experimental_local_results(finite)[0])

    def state(self):
        """The variables of training beside the averaged weights: the raw weights, Adam's
        moments, step and learning rate, the epoch counters and the loss scale, in a fixed
        order (what Keras' saving keeps of a fit: fitting.py)."""
        return (list(self.params.values()) + list(self.optimizer.m.values()) + list(self.optimizer.v.values()) +
                [self.optimizer.step, self.optimizer.lr, self.epoch, self.epoch_step, self.loss_scale.scale,
                 self.loss_scale.good_steps])

    def train_step(self, batch):
        """One official step on a distributed batch; returns the loss summed over the batch,
        in nats. A batch with NaN or inf pixels, or a loss or gradient that is not finite
        (other than a float16 overflow, which the loss scale handles), raises
        FloatingPointError and leaves the weights as they were before this step."""
        per_replica = self.strategy.experimental_local_results(batch[0])[0].shape[0]
        if per_replica % self.train_config.accum_steps:
            raise ValueError('a replica\'s batch of %d images does not split into accum_steps=%d '
                             'micro-batches' % (per_replica, self.train_config.accum_steps))
        loss, bad_pixels, finite = self._train_step(batch)
        loss, bad_pixels = float(loss), float(bad_pixels)
        error = check_step(self.step() + 1, loss, bad_pixels, bool(finite),
                           float(self.optimizer.lr.numpy()) * self.optimizer.lr_decay, self.train_config)
        if error is not None:
            raise error
        return loss

    def all_finite(self):
        """Whether every weight, EMA weight and Adam moment is finite (checked before a save)."""
        return all(bool(tf.reduce_all(tf.math.is_finite(v))) for group in (
            self.params, self.shadows, self.optimizer.m, self.optimizer.v) for v in group.values())

    def evaluate(self, batches, stop=None):
        """Test bits/dim of the EMA weights over the batches (every image counted once); stop:
        see Evaluator.evaluate."""
        return self.evaluator.evaluate(batches, self.model_config.image_shape, stop)
