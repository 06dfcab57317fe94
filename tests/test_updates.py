"""pixel_cnn_pp.updates, the official update rule, against transcriptions: Adam as the
official nn.adam_updates with train.py's settings, Polyak averaging as TF1's
ExponentialMovingAverage, and the dynamic loss scale as Keras' LossScaleOptimizer; a
skipped (non-finite) step changes nothing but the loss scale."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pixel_cnn_pp.updates import Adam, DynamicLossScale, ExponentialMovingAverage

SHAPES = {'w': (3, 4), 'b': (5,)}


def official_adam(p, grads, lr, lr_decay, mom1=0.95, mom2=0.9995):
    """The official nn.adam_updates, called as the official train.py does: lr a Python float
    multiplied by lr_decay before every step and fed as float32, t counting from 1, epsilon
    inside the square root, everything else float32 as in its graph. Returns the parameters,
    the two slots and lr (the Python float) after the steps."""
    f = np.float32
    p, m, v = p.astype(f), np.zeros(p.shape, f), np.zeros(p.shape, f)
    for t, g in enumerate(grads, start=1):
        lr *= lr_decay
        g = g.astype(f)
        m = f(mom1) * m + f(1. - mom1) * g
        v = f(mom2) * v + f(1. - mom2) * np.square(g)
        m_hat = m / (f(1.) - f(mom1) ** f(t))
        v_hat = v / (f(1.) - f(mom2) ** f(t))
        p = p - f(lr) * (m_hat / np.sqrt(v_hat + f(1e-8)))
    return p, m, v, lr


def gradients(rng, steps):
    """Gradients from 1e-7 (where epsilon inside the root decides the step) to 10, with
    exact zeros (a zero first moment must give a zero step)."""
    out = []
    for _ in range(steps):
        g = {k: rng.normal(size=s) * 10. ** rng.integers(-7, 2, s) for k, s in SHAPES.items()}
        g['w'][0, 0] = 0.
        out.append(g)
    return out


def variables(rng):
    return {k: tf.Variable(rng.normal(size=s).astype(np.float32)) for k, s in SHAPES.items()}


def test_adam_is_the_official_adam_updates():
    rng = np.random.default_rng(0)
    params = variables(rng)
    p0 = {k: v.numpy() for k, v in params.items()}
    grads = gradients(rng, 6)
    adam = Adam(params, learning_rate=0.01, lr_decay=0.9)
    for g in grads:
        adam.apply_gradients({k: tf.constant(x, tf.float32) for k, x in g.items()})
    for k in SHAPES:
        p, m, v, lr = official_adam(p0[k], [g[k] for g in grads], 0.01, 0.9)
        # the same float32 operations up to their order (lr m_hat / root against lr (m_hat / root)):
        # a few units in the last place
        np.testing.assert_allclose(params[k].numpy(), p, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(adam.m[k].numpy(), m, rtol=1e-6, atol=0)
        np.testing.assert_allclose(adam.v[k].numpy(), v, rtol=1e-6, atol=0)
    assert params['w'].numpy()[0, 0] == p0['w'][0, 0]  # a zero gradient at every step: no move
    assert adam.step.numpy() == 6
    assert adam.lr.numpy() == lr  # float64, multiplied step by step as the official Python float


def test_adam_first_step_and_epsilon():
    """Step 1 with t = 1: the bias corrections give m_hat = g and v_hat = g^2, so
    p moves by lr g / sqrt(g^2 + 1e-8): lr sign(g) for large g, lr g / 1e-4 for tiny g
    (epsilon outside the root would give lr sign(g) there too), nothing for g = 0."""
    g = np.array([10., -3., 1e-7, -2e-6, 0.], np.float32)
    p = tf.Variable(np.zeros(5, np.float32))
    adam = Adam({'p': p}, learning_rate=0.01, lr_decay=1.)
    adam.apply_gradients({'p': tf.constant(g)})
    np.testing.assert_allclose(p.numpy(), official_adam(np.zeros(5), [g], 0.01, 1.)[0], rtol=1e-6, atol=0)
    # in real numbers: -0.01 g / sqrt(g^2 + 1e-8), about -0.01 sign(g), -1e-5 for g = 1e-7
    np.testing.assert_allclose(p.numpy(), -0.01 * g / np.sqrt(g.astype(np.float64) ** 2 + 1e-8), rtol=1e-4)
    assert p.numpy()[4] == 0. and abs(p.numpy()[2]) < 2e-5


def test_adam_defaults_are_the_official_train_py():
    """learning_rate 0.001 and lr_decay 0.999995 (train.py's flags), mom1 0.95 and mom2 0.9995
    (its call of nn.adam_updates)."""
    rng = np.random.default_rng(1)
    params = variables(rng)
    p0 = params['b'].numpy()
    adam = Adam(params)
    grads = gradients(rng, 3)
    for g in grads:
        adam.apply_gradients({k: tf.constant(x, tf.float32) for k, x in g.items()})
    p, _, _, lr = official_adam(p0, [g['b'] for g in grads], 0.001, 0.999995)
    np.testing.assert_allclose(params['b'].numpy(), p, rtol=1e-6, atol=1e-8)
    assert adam.lr.numpy() == lr


def run_steps(steps, grads, finite_flags):
    """Adam, EMA and loss scale as training.Trainer combines them, in one tf.function:
    each step applies only where `finite` is true."""
    rng = np.random.default_rng(2)
    params = variables(rng)
    shadows = {k: tf.Variable(v) for k, v in params.items()}
    adam = Adam(params, learning_rate=0.01, lr_decay=0.9)
    ema = ExponentialMovingAverage(params, shadows, decay=0.5)
    scale = DynamicLossScale(initial_scale=8., growth_steps=2)

    @tf.function
    def step(g, finite):
        adam.apply_gradients(g, apply=finite)
        ema.apply(finite)
        scale.update(finite)

    states = []
    for i in steps:
        step({k: tf.constant(x, tf.float32) for k, x in grads[i].items()}, tf.constant(finite_flags[i]))
        states.append({name: [v.numpy() for v in vs] for name, vs in (
            ('params', params.values()), ('shadows', shadows.values()), ('m', adam.m.values()),
            ('v', adam.v.values()), ('adam', [adam.step, adam.lr]))})
        states[-1]['scale'] = [scale.scale.numpy(), scale.good_steps.numpy()]
    return states


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_a_non_finite_step_changes_nothing_but_the_loss_scale(bad):
    """A step with NaN or inf gradients skipped (apply False) leaves the parameters, the
    shadows, both Adam slots, t and lr bit for bit as they were, halves the loss scale,
    and the next step is the one a run without it would take."""
    grads = gradients(np.random.default_rng(3), 3)
    grads.insert(1, {k: np.where(np.arange(x.size).reshape(x.shape) % 2, bad, x) for k, x in grads[0].items()})
    flags = [True, False, True, True]
    skipped = run_steps([0, 1, 2, 3], grads, flags)
    clean = run_steps([0, 2, 3], grads, flags)
    for name in ('params', 'shadows', 'm', 'v', 'adam'):
        for before, after in zip(skipped[0][name], skipped[1][name]):
            np.testing.assert_array_equal(after, before, err_msg=name)
        for a, b in zip(skipped[3][name], clean[2][name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
    # scale 8: one good step (1 of 2), the bad one halves it and restarts the count
    assert [s['scale'] for s in skipped] == [[8., 1], [4., 0], [4., 1], [8., 0]]
    assert [s['scale'] for s in clean] == [[8., 1], [16., 0], [16., 1]]


def test_ema_is_tf1_exponential_moving_average():
    """shadow -= (1 - decay) (shadow - param) in float32, as TF1's assign_moving_average
    without zero debiasing: bit for bit, over several steps; reset copies the parameters."""
    rng = np.random.default_rng(4)
    params = variables(rng)
    shadows = {k: tf.Variable(rng.normal(size=s).astype(np.float32)) for k, s in SHAPES.items()}
    expected = {k: v.numpy() for k, v in shadows.items()}
    for decay in (0.9995, 0.9):
        ema = ExponentialMovingAverage(params, shadows, decay=decay)
        for _ in range(4):
            for k, p in params.items():
                p.assign(rng.normal(size=SHAPES[k]).astype(np.float32))
            ema.apply()
            for k in SHAPES:
                expected[k] = expected[k] - np.float32(1. - decay) * (expected[k] - params[k].numpy())
                np.testing.assert_array_equal(shadows[k].numpy(), expected[k])
    assert ExponentialMovingAverage(params, shadows).decay == 0.9995  # train.py's polyak_decay
    ema.reset()
    for k in SHAPES:
        np.testing.assert_array_equal(shadows[k].numpy(), params[k].numpy())


def test_loss_scale_follows_keras_loss_scale_optimizer():
    """The same scale after every step as keras.optimizers.LossScaleOptimizer for a run of
    finite and non-finite gradients: halved on a bad step, doubled after growth_steps good
    ones in a row; the defaults are Keras' (2^15, 2000)."""
    finite = [True, True, True, False, True, True, False, False, True, True, True, True]
    ours = DynamicLossScale(initial_scale=2. ** 10, growth_steps=3)
    var = keras.Variable(np.zeros(2, np.float32))
    reference = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.), initial_scale=2. ** 10,
                                                    dynamic_growth_steps=3)
    scales = []
    for ok in finite:
        ours.update(tf.constant(ok))
        reference.apply([tf.constant([1., 1.] if ok else [1., np.inf])], [var])
        assert ours.scale.numpy() == reference.dynamic_scale.numpy()
        scales.append(int(ours.scale.numpy()))
    assert scales == [1024, 1024, 2048, 1024, 1024, 1024, 512, 256, 256, 256, 512, 512]
    defaults = DynamicLossScale()
    assert (defaults.scale.numpy(), defaults.growth_steps) == (2. ** 15, 2000)


def test_updates_write_every_replica(two_replicas):
    """On mirrored variables (cross-replica context, gradients already summed), every
    replica's copy gets the same update as a single device's."""
    rng = np.random.default_rng(5)
    p0 = rng.normal(size=(3, 4)).astype(np.float32)
    g = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(2)]
    with two_replicas.scope():
        params = {'w': tf.Variable(p0)}
        shadows = {'w': tf.Variable(p0)}
        adam = Adam(params, learning_rate=0.01, lr_decay=0.9)
        ema = ExponentialMovingAverage(params, shadows, decay=0.5)
    single = {'w': tf.Variable(p0)}
    single_adam = Adam(single, learning_rate=0.01, lr_decay=0.9)
    for x in g:
        with two_replicas.scope():
            adam.apply_gradients({'w': tf.constant(x)})
            ema.apply()
        single_adam.apply_gradients({'w': tf.constant(x)})
    assert len(params['w'].values) == 2
    for copy in params['w'].values:
        np.testing.assert_array_equal(copy.numpy(), single['w'].numpy())
    expected = p0
    for p in (official_adam(p0, g[:1], 0.01, 0.9)[0], single['w'].numpy()):
        expected = (expected - np.float32(0.5) * (expected - np.float32(p))).astype(np.float32)
    for copy in shadows['w'].values:
        np.testing.assert_allclose(copy.numpy(), expected, rtol=0, atol=1e-6)
