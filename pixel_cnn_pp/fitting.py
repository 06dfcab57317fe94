"""Keras-native training of a PixelCNNPP: compile, fit, evaluate and Keras' callbacks, on the
one training step train.py runs (training.Trainer: the loss, its gradients summed over
replicas, the official Adam, the Polyak average), under any tf.distribute strategy.

    model = pixel_cnn_pp.PixelCNNPP(nr_resnet=1, nr_filters=32, image_shape=(32, 32, 3))
    model.compile()                      # the paper's procedure
    model.fit(x_uint8, batch_size=16, epochs=3)
    model.evaluate(x_test_uint8, return_dict=True)   # {'bits_per_dim': ...}

The model being fitted holds the Polyak average (what evaluate, predict, sampling, log_prob,
save and export use: the weights the official code evaluates and samples with); its raw
weights train in a twin, `model.raw_model`. What fit needs beyond the model's weights (the
raw weights, Adam's moments, step and learning rate) is saved with the model's own variables,
so save_weights, BackupAndRestore and ModelCheckpoint keep it and a restored fit goes on
exactly."""

import numpy as np
import keras
import tensorflow as tf

from pixel_cnn_pp import images, nn
from pixel_cnn_pp.config import PRECISIONS, TrainConfig
from pixel_cnn_pp.training import Trainer, epoch_order

STATE_KEY = 'fit_state_%d'  # the training state's entries among the model's own variables


class EpochOrder(keras.utils.PyDataset):
    """uint8 images (and labels) in the order train.py takes them: epoch e a permutation fixed
    by (seed, e) (training.epoch_order), cut into global batches, the last partial one dropped;
    `epoch` is set at each epoch's start (fit's callback), so a fit restored at epoch e
    (BackupAndRestore) sees the batches an uninterrupted one would."""

    def __init__(self, x, y, batch_size, seed):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed, self.epoch = x, y, batch_size, seed, 0

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        order = epoch_order(len(self.x), self.seed, self.epoch)
        batch = order[index * self.batch_size:(index + 1) * self.batch_size]
        x = self.x[batch]
        return x if self.y is None else (x, np.asarray(self.y)[batch].astype(np.int32))


class _SetEpoch(keras.callbacks.Callback):
    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.epoch = epoch


class FitState:
    """What compile and fit keep beside the model, out of Keras' tracking (which would take
    them for layers of the model): the run's settings, the Trainer (made once the model is
    built), the metrics, whether the model is trained, a saved training state not yet
    restored (no Trainer yet)."""

    def __init__(self, train_config=None, metrics=()):
        self.train_config, self.trainer = train_config, None
        self.bits_per_dim = keras.metrics.Mean(name='bits_per_dim') if train_config else None
        self.extra_metrics = list(metrics)
        self.initialized, self.pending = False, None


def _fit_state(model):
    """The model's FitState (an empty one before compile)."""
    if 'fit_state' not in model.__dict__:
        model.__dict__['fit_state'] = FitState()
    return model.__dict__['fit_state']


def _scaled(x):
    """Images as the network takes them: uint8 scaled to [-1, 1], floats as they are."""
    return images.scale(x) if x.dtype == tf.uint8 else tf.cast(x, tf.float32)


class KerasTraining:
    """What PixelCNNPP adds to keras.Model for compile, fit and evaluate (see the module)."""

    def compile(self, optimizer=None, metrics=None, *, learning_rate=1e-3, lr_decay=0.999995,
                polyak_decay=0.9995, seed=1, jit_compile=False, **kwargs):
        """optimizer None: the paper's procedure, the official Adam (mom1 0.95, mom2 0.9995,
        epsilon inside the square root) at learning_rate, multiplied by lr_decay before every
        step; or any Keras optimizer (with its own learning-rate schedule). Either way the
        Polyak average (polyak_decay) is what the model holds. Dropout is the model's
        dropout_p; seed fixes dropout and fit's data order. jit_compile=True compiles the loss
        and gradients with XLA. metrics: more keras.metrics.Metric objects for evaluate, each
        updated with (the scaled images, the network's output). The loss and metric reported
        is bits/dim."""
        precision = self.dtype_policy.name if self.dtype_policy.name in PRECISIONS else 'float32'
        config = TrainConfig(learning_rate=learning_rate, lr_decay=lr_decay, polyak_decay=polyak_decay, seed=seed,
                             xla=bool(jit_compile), precision=precision,
                             replicas=self.distribute_strategy.num_replicas_in_sync, progress=False)
        super().compile(optimizer=optimizer, jit_compile=False, **kwargs)
        before = _fit_state(self)
        with self.distribute_strategy.scope():
            state = self.__dict__['fit_state'] = FitState(config, metrics or ())
        state.initialized, state.pending = before.initialized, before.pending
        if self.built:
            self._start_trainer()

    def compile_from_config(self, config):
        """keras.models.load_model: compile() again as it was called."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    def get_compile_config(self):
        config, c = super().get_compile_config(), _fit_state(self).train_config
        if config is None or c is None:  # not compiled
            return config
        return dict(config, learning_rate=c.learning_rate, lr_decay=c.lr_decay, polyak_decay=c.polyak_decay,
                    seed=c.seed, jit_compile=c.xla)

    @property
    def trainer(self):
        """fit's training.Trainer (None before compile and a built model)."""
        return _fit_state(self).trainer

    @property
    def raw_model(self):
        """The raw (not averaged) weights, as a PixelCNNPP: fit trains them (None before compile)."""
        return self.trainer.model if self.trainer else None

    def _start_trainer(self):
        state = _fit_state(self)
        with self.distribute_strategy.scope():
            state.trainer = Trainer(self, state.train_config, self.distribute_strategy)
            if isinstance(self.optimizer, keras.optimizers.Optimizer):
                self.optimizer.build(state.trainer.model.trainable_variables)
        if state.pending is not None:
            self._set_state(state.pending)

    @property
    def metrics(self):
        state = _fit_state(self)
        return [state.bits_per_dim] + state.extra_metrics if state.bits_per_dim else []

    # ------------------------------------------------------------------ fit

    def fit(self, x=None, y=None, batch_size=None, epochs=1, callbacks=None, validation_split=0.,
            validation_data=None, **kwargs):
        """keras.Model.fit, on what users hold: uint8 images (N, H, W, C) as a NumPy array,
        with their labels as y for a class-conditional model (taken in train.py's seeded
        order: each epoch a permutation fixed by the seed and the epoch), or a tf.data of
        images or (images, labels) batches. The conversion to [-1, 1] is the model's. The
        first fit of a model not yet trained runs the data-dependent initialisation on its
        first batch (once: not again on a later or restored fit)."""
        callbacks = list(callbacks or [])
        if isinstance(x, np.ndarray):
            if validation_split:
                split = int(len(x) * (1. - validation_split))
                validation_data = (x[split:],) + (() if y is None else (y[split:],))
                x, y = x[:split], None if y is None else y[:split]
            x = EpochOrder(x, y, batch_size or 32, _fit_state(self).train_config.seed)
            callbacks.append(_SetEpoch(x))
            first, batch_size, y = x[0], None, None
        elif isinstance(x, tf.data.Dataset):
            first = next(iter(x))
        else:
            raise TypeError('fit takes uint8 images as a NumPy array (with labels as y) or a tf.data.Dataset '
                            'of batches, got %s' % type(x).__name__)
        self._initialize(first)
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, callbacks=callbacks,
                           validation_data=validation_data, shuffle=False, **kwargs)  # EpochOrder's order

    def _initialize(self, batch):
        """The data-dependent init on this batch, unless the model is trained already."""
        x, labels, _ = keras.utils.unpack_x_y_sample_weight(batch)
        if not self.built:
            x = tf.convert_to_tensor(x)
            with self.distribute_strategy.scope():
                self.build(tuple(x.shape), (None, self.num_labels) if self.num_labels else None)
        if self.trainer is None:
            self._start_trainer()
        if not _fit_state(self).initialized:
            self.trainer.initialize(_scaled(tf.convert_to_tensor(x)), labels)
            _fit_state(self).initialized = True

    def train_step(self, batch):
        """Trainer.replica_step: the step train.py runs, on this replica's batch."""
        x, y = self._unpack(batch)
        optimizer = self.optimizer if isinstance(self.optimizer, keras.optimizers.Optimizer) else None
        nats, _, _ = self.trainer.replica_step(x, y, optimizer)
        return self._report(nats, x)

    def test_step(self, batch):
        """The test loss of the model's weights (the Polyak average), as bits/dim."""
        x, y = self._unpack(batch)
        out = self(x, h=tf.one_hot(y, self.num_labels) if self.num_labels else None)
        nats = tf.reduce_sum(nn.discretized_mix_logistic_loss(x, out, sum_all=False))
        for metric in _fit_state(self).extra_metrics:
            metric.update_state(x, out)
        return self._report(nats, x)

    def predict_step(self, batch):
        """The network's output for a batch of images (uint8 or [-1, 1]; with labels for a
        class-conditional model), with the model's weights."""
        x, y = self._unpack(batch)
        return self(x, h=tf.one_hot(y, self.num_labels) if self.num_labels else None)

    def _unpack(self, batch):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        x = _scaled(x)
        y = tf.zeros(tf.shape(x)[:1], tf.int32) if y is None else tf.cast(tf.reshape(y, [-1]), tf.int32)
        return x, y

    def _report(self, nats, x):
        n = tf.cast(tf.shape(x)[0], tf.float32)
        dims = float(np.prod(x.shape[1:]))
        _fit_state(self).bits_per_dim.update_state(nats / (n * dims * np.log(2.)), sample_weight=n)
        logs = {m.name: m.result() for m in self.metrics}
        return dict(logs, loss=logs['bits_per_dim'])

    # ------------------------------------------------------------------ saved state

    def _state(self):
        return self.trainer.state() if self.trainer is not None else []

    def _set_state(self, values):
        state = self._state()
        if len(values) != len(state):
            raise ValueError('the saved training state has %d entries, this model\'s trainer %d'
                             % (len(values), len(state)))
        for var, value in zip(state, values):
            var.assign(value)
        _fit_state(self).pending = None
        _fit_state(self).initialized = True

    def save_own_variables(self, store):
        """The model's variables, and fit's training state (trainer.state()) beside them."""
        super().save_own_variables(store)
        values = [v.numpy() for v in self._state()] or _fit_state(self).pending or []
        for k, value in enumerate(values):
            store[STATE_KEY % k] = value

    def load_own_variables(self, store):
        """Loading weights (load_weights, keras.models.load_model, BackupAndRestore) makes a
        trained model: no data-dependent init at its next fit; a saved training state goes
        back into fit's trainer (kept until one is made)."""
        keys = [k for k in store.keys() if k.startswith('fit_state_')] if hasattr(store, 'keys') else []
        values = [np.asarray(store[STATE_KEY % k]) for k in range(len(keys))]
        own = {k: store[k] for k in (store.keys() if hasattr(store, 'keys') else []) if not k.startswith('fit_state_')}
        super().load_own_variables(own)
        _fit_state(self).initialized = True
        if values:
            if self.trainer is not None:
                self._set_state(values)
            else:
                _fit_state(self).pending = values
