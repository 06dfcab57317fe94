"""The training procedure (the update rule itself: test_updates.py; the run around it: test_run.py):
a replay of the official reference run, replicas that sum like the official multi-GPU code,
accumulation, recomputation, precisions, the L2 term, divergence."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from pixel_cnn_pp import data as data_lib, images, training
from pixel_cnn_pp.nn import discretized_mix_logistic_loss
from pixel_cnn_pp.model import PixelCNNPP
from pixel_cnn_pp.config import TrainConfig
from pixel_cnn_pp.training import Trainer
from conftest import FIXTURES
from test_official import CONFIG

TINY = dict(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, dropout_p=0.)


@pytest.mark.parametrize('run', ['official_small', 'official_small_cond'])
def test_replays_official_run(run):
    """Init, three official Adam steps and EMA from the official starting weights reach the
    official run's loss. The weights agree only to about lr per element: the official step
    does not compute every gradient from the same weights (see the README), ours does."""
    ref = dict(np.load(os.path.join(FIXTURES, run, 'ref.npz')))
    reader = tf.train.load_checkpoint(os.path.join(FIXTURES, run, 'params_cifar.ckpt'))
    cond = 'y' in ref
    trainer = Trainer(PixelCNNPP(**CONFIG, dropout_p=0., image_shape=(32, 32, 3), num_labels=10 if cond else 0))
    pre = {k: ref['pre_init/model/' + k] for k in trainer.params}
    for k, var in trainer.params.items():
        var.assign(pre[k])
    trainer.initialize(ref['x_init'], ref['y_init'] if cond else None)
    for k, var in trainer.shadows.items():  # the official shadows start before the init pass
        var.assign(pre[k])
    y = ref['y'] if cond else np.zeros(len(ref['x']), np.int32)
    batch = (tf.constant(ref['x']), tf.constant(y), tf.ones(len(ref['x'])))
    for _ in range(3):
        trainer.train_step(batch)
    assert trainer.optimizer.step.numpy() == 3 == reader.get_tensor('Variable') - 1  # official t
    assert trainer.optimizer.lr.numpy() == pytest.approx(1e-3 * 0.999995 ** 3, rel=1e-12)
    h = tf.one_hot(y, 10) if cond else None
    loss = discretized_mix_logistic_loss(ref['x'], trainer.model(ref['x'], h=h)).numpy()
    assert loss == pytest.approx(ref['loss'], rel=1e-4)
    for k in trainer.params:
        gap = np.abs(reader.get_tensor('model/' + k) - trainer.params[k].numpy()).max()
        assert gap < 2 * 3 * 1e-3  # each run moves a weight by at most 3 lr
        # the shadows average the weights with weight 1 - 0.9995 per step
        shadow_gap = np.abs(trainer.shadows[k].numpy() -
                            reader.get_tensor('model/' + k + '/ExponentialMovingAverage')).max()
        assert shadow_gap <= 3 * (1 - 0.9995) * 3e-3 + 1e-7, k


def tiny_data(n_train=32, n_test=10, size=8, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return data_lib.Data(rng.integers(0, 256, (n_train, size, size, channels), dtype=np.uint8),
                         rng.integers(0, 10, n_train).astype(np.int32),
                         rng.integers(0, 256, (n_test, size, size, channels), dtype=np.uint8),
                         rng.integers(0, 10, n_test).astype(np.int32), 10)


def first_batch(strategy, data, per_replica):
    return next(iter(data_lib.train_batches(strategy, data, per_replica, seed=3, epoch=0)))


def twin(trainer, strategy, **kwargs):
    """A Trainer with trainer's config and weights (and EMA) but other kwargs."""
    other = Trainer(PixelCNNPP(**trainer.model_config.kwargs()), dataclasses.replace(trainer.train_config, **kwargs),
                    strategy)
    for k, var in other.params.items():
        var.assign(trainer.params[k].read_value())
    other.ema.reset()
    return other


def assert_same_state(a, b):
    """Weights, EMA, Adam moments, step and learning rate of two Trainers agree to float
    round-off: weights to 3% of an Adam step of lr 1e-3 (the gradients agree to about 5e-5
    relative, but Adam's g / sqrt(v + 1e-8) turns the round-off of a gradient near 1e-4 into
    a percent of its step), moments to 1e-3 relative or 1e-3 of the variable's largest."""
    for group in ('params', 'shadows'):
        for k, v in getattr(a, group).items():
            np.testing.assert_allclose(v.numpy(), getattr(b, group)[k].numpy(), rtol=0, atol=3e-5)
    for moments in ('m', 'v'):
        for k in a.params:
            x, y = getattr(a.optimizer, moments)[k].numpy(), getattr(b.optimizer, moments)[k].numpy()
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-3 * np.abs(y).max())
    assert a.optimizer.step.numpy() == b.optimizer.step.numpy()
    assert a.optimizer.lr.numpy() == b.optimizer.lr.numpy()


def test_two_replicas_accumulating_equal_one_replica_with_the_whole_batch(one_replica, two_replicas):
    """Losses and gradients summed over replicas, as the official code sums its GPUs', and
    over accum_steps micro-batches: one replica's batch of 8 makes the update of two replicas
    that each accumulate two micro-batches of 2 (the same loss, weights, EMA, Adam moments,
    step and learning rate, to float round-off), and the mirrored copies agree. (Evaluation
    on two replicas: test_evaluate_counts_every_test_image_once.)"""
    data = tiny_data()
    one, two = one_replica, two_replicas
    t1 = Trainer(PixelCNNPP(**TINY, image_shape=(8, 8, 3), num_labels=10), TrainConfig(l2_weight=1e-3), one)
    t1.initialize(images.scale(data.train_x[:8]), data.train_y[:8])
    t2 = twin(t1, two, l2_weight=1e-3, accum_steps=2)
    start = {k: v.numpy() for k, v in t1.params.items()}
    for b1, b2 in zip(data_lib.train_batches(one, data, 8, seed=3, epoch=0, max_steps=2),
                      data_lib.train_batches(two, data, 4, seed=3, epoch=0, max_steps=2)):
        assert t1.train_step(b1) == pytest.approx(t2.train_step(b2), rel=1e-5)
    assert_same_state(t1, t2)
    for k in t2.params:
        for replica in t2.params[k].values:  # the mirrored copies agree
            np.testing.assert_array_equal(replica.numpy(), t2.params[k].numpy())
    assert t2.optimizer.step.numpy() == 2
    assert any(np.abs(start[k] - t1.params[k].numpy()).max() > 1e-3 for k in start)
    with pytest.raises(ValueError, match='batch of 3 images does not split into accum_steps=2'):
        t2.train_step(next(iter(data_lib.train_batches(two, data, 3, seed=3, epoch=0))))


def test_recompute_changes_no_number(one_replica):
    """--recompute with dropout: the recomputed pass drops the same units (a stateless seed
    per step and block), so the loss and every gradient are the same, and so is each update
    (the update rule sees only them; train_step calls _loss_and_grads with the step's seed
    whatever recompute is)."""
    data = tiny_data()
    kwargs = dict(TINY, dropout_p=0.5)
    kept = Trainer(PixelCNNPP(**kwargs, image_shape=(8, 8, 3)), TrainConfig(seed=5), one_replica)
    kept.initialize(images.scale(data.train_x[:8]))
    recomputed = twin(kept, one_replica, seed=5, recompute=True)
    x, y = images.scale(data.train_x[8:16]), tf.constant(data.train_y[8:16])
    for seed in ([5, 1], [5, 2]):
        seed = tf.constant(seed, tf.int64)
        loss, grads = kept._loss_and_grads(x, y, seed)
        loss_r, grads_r = recomputed._loss_and_grads(x, y, seed)
        assert float(loss_r) == pytest.approx(float(loss), rel=1e-6)
        for g, g_r in zip(grads, grads_r):  # float32 round-off of sums over pixels
            np.testing.assert_allclose(g_r, g, rtol=1e-4, atol=1e-5 * np.abs(g).max())
    other_seed = kept._loss_and_grads(x, y, tf.constant([5, 3], tf.int64))[0]
    assert float(other_seed) != float(loss)  # dropout is on: the seed changes the loss
    with pytest.raises(ValueError, match='recompute=True with dropout needs a stateless seed'):
        kept.model(images.scale(data.train_x[:2]), training=True, recompute=True)


def test_l2_weight_adds_its_gradient_and_not_to_the_loss(one_replica):
    """l2_weight (score.py's background models): l2_weight x the sum of squared weights adds
    its gradient 2 l2_weight p to every weight's and nothing to the reported loss."""
    kwargs = dict(nr_resnet=1, nr_filters=4, nr_logistic_mix=2, dropout_p=0.)
    x = images.scale(np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)))
    y = tf.zeros([2], tf.int32)
    plain = Trainer(PixelCNNPP(**kwargs, image_shape=(8, 8, 3)), strategy=one_replica)
    plain.initialize(x)
    l2 = Trainer(PixelCNNPP(**kwargs, image_shape=(8, 8, 3)), TrainConfig(l2_weight=10.), one_replica)
    for name, var in l2.params.items():
        var.assign(plain.params[name])
    seed = tf.constant([0, 0], tf.int64)
    loss0, grads0 = plain._loss_and_grads(x, y, seed)
    loss1, grads1 = l2._loss_and_grads(x, y, seed)
    assert float(loss0) == float(loss1)
    for p, g0, g1 in zip(plain.params.values(), grads0, grads1):
        # float32 gradients of a sum over pixels: round-off relative to the largest of them
        np.testing.assert_allclose(g1 - g0, 20. * p.numpy(), rtol=1e-3, atol=1e-5 * np.abs(g0).max())


def test_evaluate_counts_every_test_image_once(two_replicas):
    """10 test images in global batches of 4: the padded last batch adds nothing."""
    data = tiny_data()
    strategy = two_replicas
    trainer = Trainer(PixelCNNPP(**TINY, image_shape=(8, 8, 3)), strategy=strategy)
    trainer.initialize(images.scale(data.train_x[:8]))
    x = images.scale(data.test_x)
    nats = discretized_mix_logistic_loss(x, trainer.ema_model(x)).numpy()
    expected = nats / (np.log(2.) * 8 * 8 * 3 * 10)
    assert trainer.evaluate(data_lib.test_batches(strategy, data, 2)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow  # bfloat16 is emulated on most CPUs; mixed_float16 runs in the default set
def test_mixed_bfloat16_training_step(one_replica):
    """Same weights, same batch: the bfloat16 step's loss is the float32 one to bfloat16
    precision, and its update moves the float32 weights like the float32 step does."""
    data = tiny_data()
    batch = first_batch(one_replica, data, 8)
    full = Trainer(PixelCNNPP(**TINY, image_shape=(8, 8, 3)), strategy=one_replica)
    mixed = Trainer(PixelCNNPP(**TINY, image_shape=(8, 8, 3)), TrainConfig(precision='mixed_bfloat16'),
                    one_replica)
    full.initialize(images.scale(data.train_x[:8]))
    for k, v in mixed.params.items():
        v.assign(full.params[k].read_value())
    start = {k: v.numpy() for k, v in full.params.items()}
    loss_full = full.train_step(batch)
    loss_mixed = mixed.train_step(batch)
    assert loss_mixed == pytest.approx(loss_full, rel=1e-2) and loss_mixed != loss_full
    moved_full = np.concatenate([(full.params[k].numpy() - start[k]).ravel() for k in start])
    moved_mixed = np.concatenate([(mixed.params[k].numpy() - start[k]).ravel() for k in start])
    assert np.abs(moved_mixed).max() < 1.5e-3  # an Adam first step moves by about lr = 1e-3
    assert np.mean(np.sign(moved_mixed) == np.sign(moved_full)) > 0.9
    assert mixed.ema_model.compute_dtype == 'float32'  # evaluation stays float32


def test_mixed_float16_loss_scaling(two_replicas):
    """An overflowing step is skipped on every replica and halves the scale; finite steps
    update the weights and, growth_steps in a row, double it."""
    data = tiny_data()
    batch = first_batch(two_replicas, data, 4)
    trainer = Trainer(PixelCNNPP(**TINY, image_shape=(8, 8, 3)), TrainConfig(precision='mixed_float16'), two_replicas)
    trainer.loss_scale.growth_steps = 2
    trainer.initialize(images.scale(data.train_x[:8]))
    params = lambda: {k: v.numpy() for k, v in trainer.params.items()}  # noqa: E731
    start, shadows = params(), {k: v.numpy() for k, v in trainer.shadows.items()}
    trainer.loss_scale.scale.assign(2. ** 40)  # the float16 gradients overflow
    assert np.isfinite(trainer.train_step(batch))  # an overflow is no divergence
    assert trainer.loss_scale.scale.numpy() == 2. ** 39
    assert trainer.optimizer.step.numpy() == 0 and trainer.epoch_step.numpy() == 1
    for k, v in params().items():
        np.testing.assert_array_equal(v, start[k])
        np.testing.assert_array_equal(trainer.shadows[k].numpy(), shadows[k])
    trainer.loss_scale.scale.assign(1.)
    for steps, scale in ((1, 1.), (2, 2.), (3, 2.)):
        trainer.train_step(batch)
        assert trainer.optimizer.step.numpy() == steps and trainer.loss_scale.scale.numpy() == scale
    for k, v in trainer.params.items():
        assert all(np.array_equal(r.numpy(), v.values[0].numpy()) for r in v.values)
    assert any(not np.array_equal(v, start[k]) for k, v in params().items())


def test_checkpoints_move_between_precisions(tmp_path):
    """A checkpoint resumes in another precision (train.py restores with assert_consumed)."""
    data = tiny_data()
    mixed = Trainer(PixelCNNPP(**TINY, image_shape=(8, 8, 3)), TrainConfig(precision='mixed_float16'))
    mixed.initialize(images.scale(data.train_x[:8]))
    mixed.loss_scale.scale.assign(4.)
    path = mixed.checkpoint.save(str(tmp_path / 'mixed'))
    full = Trainer(PixelCNNPP(**TINY, image_shape=(8, 8, 3)))
    full.checkpoint.restore(path).assert_consumed()
    for k, v in full.params.items():
        np.testing.assert_array_equal(v.numpy(), mixed.params[k].numpy())
    again = Trainer(PixelCNNPP(**TINY, image_shape=(8, 8, 3)), TrainConfig(precision='mixed_float16'))
    again.checkpoint.restore(full.checkpoint.save(str(tmp_path / 'full'))).assert_consumed()
    assert again.loss_scale.scale.numpy() == 4.
    for k, v in again.shadows.items():
        np.testing.assert_array_equal(v.numpy(), mixed.shadows[k].numpy())


@pytest.fixture(scope='module')
def tiny_trainer(one_replica):
    """One replica, learning rate 0.01 halved every step, initialised: the tests of steps
    that are not applied share it (each asserts against the state it finds)."""
    data = tiny_data()
    trainer = Trainer(PixelCNNPP(**TINY, image_shape=(8, 8, 3)), TrainConfig(learning_rate=0.01, lr_decay=0.5),
                      one_replica)
    trainer.initialize(images.scale(data.train_x[:8]))
    return trainer, first_batch(one_replica, data, 4)


NOT_APPLIED = pytest.mark.xdist_group('training_tiny_trainer')  # the tests of tiny_trainer: built once


@NOT_APPLIED
def test_nonfinite_batch_is_reported(tiny_trainer):
    trainer, _ = tiny_trainer
    step = trainer.optimizer.step.numpy()
    x = np.zeros((4, 8, 8, 3), np.float32)
    x[1, 2, 3, 0] = np.nan
    with pytest.raises(FloatingPointError, match='batch of step %d holds 1 NaN or inf pixel' % (step + 1)):
        trainer.train_step((tf.constant(x), tf.zeros(4, tf.int32), tf.ones(4)))
    assert trainer.optimizer.step.numpy() == step


@NOT_APPLIED
def test_divergence_stops_at_its_step_and_applies_nothing(tiny_trainer):
    """A step whose loss and gradients are not finite raises at that step (not the next),
    with the step and learning rate, and leaves weights, EMA, Adam moments and the step
    counter untouched."""
    trainer, batch = tiny_trainer
    trainer.train_step(batch)  # the one step any test of tiny_trainer applies
    assert trainer.optimizer.step.numpy() == 1
    state = lambda: [v.numpy() for g in (trainer.params, trainer.shadows, trainer.optimizer.m,  # noqa: E731
                                         trainer.optimizer.v) for v in g.values()]
    head = trainer.params['dense_%d/b' % (len([k for k in trainer.params if k.startswith('dense_')]) // 3 - 1)]
    bias = head.numpy()
    head.assign(tf.fill([20], 1e38))  # logits beyond float32: inf loss, NaN gradients
    try:
        before = state()
        with pytest.raises(FloatingPointError, match=r'diverged at step 2: the loss is (nan|inf) \(gradients '
                                                     r'not finite\), at learning rate 0\.0025.*lower learning_rate'):
            trainer.train_step(batch)  # 0.01 x 0.5 x 0.5
        assert trainer.optimizer.step.numpy() == 1
        for a, b in zip(before, state()):
            np.testing.assert_array_equal(a, b)
    finally:
        head.assign(bias)


def test_stateless_dropout_is_a_function_of_the_seed():
    """The same seed drops the same units (a resumed run, a recomputed pass); another seed
    other units; no seed: the global random state, as the official code."""
    model = PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, dropout_p=0.5)
    x = tf.random.uniform((2, 8, 8, 3), -1, 1, seed=1)
    run = lambda seed: model(x, training=True, seed=seed).numpy()  # noqa: E731
    a = run(tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(a, run(tf.constant([1, 2], tf.int64)))
    assert not np.allclose(a, run(tf.constant([1, 3], tf.int64)))
    assert not np.allclose(run(None), run(None))


def test_epoch_order_is_a_seeded_permutation():
    a = training.epoch_order(100, 1, 0)
    assert sorted(a) == list(range(100))
    np.testing.assert_array_equal(a, training.epoch_order(100, 1, 0))
    assert not np.array_equal(a, training.epoch_order(100, 1, 1))
    assert not np.array_equal(a, training.epoch_order(100, 2, 0))


def test_train_batches_resume_where_they_stopped(two_replicas):
    data = tiny_data(n_train=40)
    strategy = two_replicas
    full = [b for b in data_lib.train_batches(strategy, data, 4, seed=5, epoch=2)]
    rest = [b for b in data_lib.train_batches(strategy, data, 4, seed=5, epoch=2, skip=3)]
    assert len(full) == 5 and len(rest) == 2  # 40 // 8 full global batches; the rest dropped
    for a, b in zip(full[3:], rest):
        for ra, rb in zip(a[0].values, b[0].values):
            np.testing.assert_array_equal(ra.numpy(), rb.numpy())
    # the replicas' images of one global batch are the epoch's next 8, in order
    order = training.epoch_order(40, 5, 2)
    first = np.concatenate([r.numpy() for r in full[0][0].values])
    np.testing.assert_array_equal(first, images.scale(data.train_x[order[:8]]).numpy())


def test_sampling_from_mirrored_weights(two_replicas):
    """train.py samples from its EMA model, whose weights are mirrored over the replicas."""
    import pixel_cnn_pp
    data = tiny_data()
    trainer = Trainer(PixelCNNPP(**TINY, image_shape=(8, 8, 3)), strategy=two_replicas)
    trainer.initialize(images.scale(data.train_x[:8]))
    mirrored = pixel_cnn_pp.sample(trainer.ema_model, 2, seed=1, image_shape=(8, 8, 3))
    plain = pixel_cnn_pp.PixelCNNPP(**TINY)
    plain(np.zeros((1, 8, 8, 3), np.float32))
    for k, v in plain.official_variables().items():
        v.assign(trainer.shadows[k].read_value())
    np.testing.assert_array_equal(
        mirrored, pixel_cnn_pp.sample(plain, 2, seed=1, image_shape=(8, 8, 3), method='naive'))
