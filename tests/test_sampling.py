"""Sampling: the fast cached sampler draws exactly what the official per-pixel loop draws."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import pixel_cnn_pp
from pixel_cnn_pp import PixelCNNPP, sampling
from pixel_cnn_pp.config import ConfigError
import conftest
import np_reference


def initialised(channels, conditional, nonlinearity='concat_elu', size=8):
    """conftest.initialised with 3 logistics, 10 labels if conditional."""
    return conftest.initialised(channels, 10 if conditional else 0, size=(size, size), nr_logistic_mix=3,
                                resnet_nonlinearity=nonlinearity)


@functools.lru_cache(maxsize=None)
def shared(channels, conditional, nonlinearity='concat_elu'):
    """initialised(...) made once per config (the same weights), for the tests that only draw
    from it: its samplers are traced once, not once per test. A test that changes the
    weights makes its own."""
    keras.utils.set_random_seed(1234)  # the same weights whichever test asks first
    return initialised(channels, conditional, nonlinearity)


@pytest.mark.parametrize('channels, conditional, nonlinearity', [
    (3, False, 'concat_elu'), (3, True, 'concat_elu'), (1, False, 'concat_elu'), (3, False, 'relu')])
def test_fast_equals_naive(channels, conditional, nonlinearity):
    model, h = shared(channels, conditional, nonlinearity)
    shape = (8, 8, channels)
    naive = pixel_cnn_pp.sample(model, 4, h=h, seed=5, method='naive', image_shape=shape)
    fast = pixel_cnn_pp.sample(model, 4, h=h, seed=5, method='fast', image_shape=shape)
    assert naive.dtype == np.uint8 and naive.shape == (4,) + shape
    np.testing.assert_array_equal(fast, naive)
    assert len(np.unique(naive)) > 20  # real samples, not a constant image


def test_fast_equals_naive_on_a_wide_image():
    """12 x 16: the levels are 12x16, 6x8 and 3x4, so odd rows and columns at the coarsest."""
    model, _ = initialised(3, False, size=12)
    naive = pixel_cnn_pp.sample(model, 2, seed=1, method='naive', image_shape=(12, 16, 3))
    np.testing.assert_array_equal(pixel_cnn_pp.sample(model, 2, seed=1, image_shape=(12, 16, 3)), naive)
    # a sampler made once serves the weights the model has at each call (training goes on)
    for layer in model.weight_norm_layers():
        layer.g.assign(layer.g * 1.5)
    naive2 = pixel_cnn_pp.sample(model, 2, seed=1, method='naive', image_shape=(12, 16, 3))
    assert (naive2 != naive).mean() > 0.3  # (values clipped at 0 or 255 stay)
    np.testing.assert_array_equal(pixel_cnn_pp.sample(model, 2, seed=1, image_shape=(12, 16, 3)), naive2)


def test_xla_compiled_fast_sampler_equals_naive():
    """jit_compile=True (each row's pixel loop compiled by XLA on the caches' slabs): the
    naive loop's images, on a wide image (odd columns at the coarsest level), with
    conditioning, completion and temperature; the row step and each kind of row's pixel
    loop traced once."""
    model, _ = shared(3, True)
    shape = (8, 12, 3)
    h = tf.one_hot([2, 7], 10)
    given = np.random.default_rng(0).integers(0, 256, (2,) + shape, dtype=np.uint8)
    kw = dict(h=h, seed=3, image_shape=shape, given=given, given_rows=3, temperature=.8)
    naive = pixel_cnn_pp.sample(model, 2, method='naive', **kw)
    xla = pixel_cnn_pp.sample(model, 2, jit_compile=True, **kw)
    assert (xla != naive).mean() <= 1e-3  # float round-off may flip a rare value
    np.testing.assert_array_equal(xla[:, :3], given[:, :3])
    assert len(np.unique(xla[:, 3:])) > 20
    np.testing.assert_array_equal(pixel_cnn_pp.sample(model, 2, jit_compile=True, **kw), xla)
    s = sampling.sampler(model, shape, True, jit_compile=True)
    assert s.row.experimental_get_tracing_count() == 1
    assert sorted(f.experimental_get_tracing_count() for f in s._pixels.values()) == [1, 1, 1]
    with pytest.raises(ConfigError, match='is for method=fast') as e:
        pixel_cnn_pp.sample(model, 2, method='naive', jit_compile=True, **kw)
    assert e.value.field == 'jit_compile' and e.value.values['method'] == 'naive'


def test_naive_is_the_per_pixel_loop():
    """Pixel (i, j) of a sample is drawn from model(x) on the image generated so far, so
    regenerating from the sample's own prefix reproduces it."""
    model, _ = shared(3, False)
    seed = tf.constant(2, tf.int64)
    # the float samples: like the official loop, generation conditions on unrounded values
    noise = sampling.noise((4, 8, 8, 3), model.nr_logistic_mix, seed)
    x = sampling.sampler(model, (8, 8, 3), False, 'naive').draw(*noise, tf.zeros((4, 8, 8, 3)), 0, 1.).numpy()
    for i, j in [(0, 0), (3, 5), (7, 7)]:
        prefix = x.copy()
        prefix.reshape(4, 64, 3)[:, i * 8 + j:] = 0.
        drawn = pixel_cnn_pp.nn.sample_with_noise(model(prefix), 3, noise)
        np.testing.assert_allclose(drawn[:, i, j], x[:, i, j], atol=1e-5)  # round-off only


@pytest.mark.parametrize('conditional', [False, True])
def test_completion_keeps_the_given_rows_and_samples_the_rest(conditional):
    """The first r rows are given's bit for bit; fast and naive draw the same rest from
    p(x | those rows), which depends on them."""
    model, h = shared(3, conditional)
    given = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    kw = dict(h=h, seed=5, image_shape=(8, 8, 3), given=given, given_rows=3)
    naive = pixel_cnn_pp.sample(model, 4, method='naive', **kw)
    fast = pixel_cnn_pp.sample(model, 4, method='fast', **kw)
    np.testing.assert_array_equal(naive[:, :3], given[:, :3])
    assert np.mean(fast != naive) <= 1e-3  # float round-off at most
    free = pixel_cnn_pp.sample(model, 4, h=h, seed=5, image_shape=(8, 8, 3))
    assert not np.array_equal(naive[:, 3:], free[:, 3:])  # the rest depends on the given rows
    assert not np.array_equal(naive[:, 3:], given[:, 3:])
    whole = pixel_cnn_pp.sample(model, 4, method='fast', **dict(kw, given_rows=8))
    np.testing.assert_array_equal(whole, given)


def test_temperature_matches_numpy_and_sharpens():
    """The mixture logits / T and the scales x T, as a NumPy transcription; T = 1 is the
    untempered sampler; draws at T = 0.5 have a lower NLL under the mixture they came from."""
    rng = np.random.default_rng(0)
    l = rng.normal(size=(2, 4, 4, 30)).astype(np.float32)
    u_mix, u = pixel_cnn_pp.nn.mixture_noise(l, 3, tf.constant(3, tf.int64))
    for T in (1., 0.5, 2.):
        np.testing.assert_allclose(pixel_cnn_pp.nn.sample_with_noise(l, 3, (u_mix, u), T),
                                   np_reference.mix_logistic_sample(l, 3, u_mix.numpy(), u.numpy(), T), atol=1e-5)
    np.testing.assert_array_equal(pixel_cnn_pp.nn.sample_with_noise(l, 3, (u_mix, u), 1.),
                                  pixel_cnn_pp.nn.sample_with_noise(l, 3, (u_mix, u)))
    # one context, many draws: lower T puts the draws where the model's density is higher
    l = np.tile(rng.normal(size=(1, 1, 1, 30)).astype(np.float32), [4000, 1, 1, 1])
    rest = l[..., 3:].reshape(4000, 1, 1, 3, 9)  # 3 components: per channel 3 means, log-scales, coeffs
    rest *= 0.3
    rest[..., 3:6] -= 3.  # log-scales about -3, as a trained model's
    l[..., 3:] = rest.reshape(4000, 1, 1, 27)
    nll = {}
    for T in (1., 0.5):
        x = pixel_cnn_pp.nn.sample_with_noise(l, 3, pixel_cnn_pp.nn.mixture_noise(l, 3, tf.constant(1, tf.int64)), T)
        x = (np.round(x.numpy() * 127.5 + 127.5) - 127.5) / 127.5  # to 8-bit values
        nll[T] = np_reference.mix_logistic_nll(x, l).mean()
    assert nll[0.5] < nll[1.] - 0.1


@pytest.mark.parametrize('method', ['fast', 'naive'])
def test_the_compiled_sampler_is_reused(method):
    """Any batch size, seed, completion or temperature: traced once per model, image shape,
    method and conditioning."""
    model, _ = shared(3, False)
    given = np.zeros((3, 8, 8, 3), np.uint8)
    pixel_cnn_pp.sample(model, 2, seed=1, method=method, image_shape=(8, 8, 3))
    pixel_cnn_pp.sample(model, 3, seed=2, method=method, image_shape=(8, 8, 3), given=given, given_rows=2,
                        temperature=0.7)
    s = sampling.sampler(model, (8, 8, 3), False, method)
    assert s.row.experimental_get_tracing_count() == 1
    assert method == 'naive' or s.start.experimental_get_tracing_count() == 1


def test_seeds():
    model, _ = shared(3, False)
    a = pixel_cnn_pp.sample(model, 2, seed=3, image_shape=(8, 8, 3))
    np.testing.assert_array_equal(a, pixel_cnn_pp.sample(model, 2, seed=3, image_shape=(8, 8, 3)))
    assert not np.array_equal(a, pixel_cnn_pp.sample(model, 2, seed=4, image_shape=(8, 8, 3)))


def test_sample_errors():
    """ConfigErrors naming the arguments (cli.py turns them into flags)."""
    model, h = shared(3, True)
    cases = [(dict(h=h), '^h has 4 rows, but num=2$', ('h', 'num')),
             (dict(h=h[:2], method='slow'), '^method=slow is not one of fast, naive$', ('method',)),
             (dict(h=h[:2], method='naive', jit_compile=True), '^jit_compile=True is for method=fast ',
              ('jit_compile', 'method')),
             (dict(h=h[:2], temperature=0), '^temperature=0 is not > 0$', ('temperature',)),
             (dict(h=h[:2], given_rows=2), '^given_rows=2 needs the given images$', ('given_rows', 'given')),
             (dict(h=h[:2], given=np.zeros((2, 8, 8, 3)), given_rows=1),
              r'^given must be uint8 images of shape \(2, 8, 8, 3\)', ('given',)),
             (dict(h=h[:2], given=np.zeros((2, 8, 8, 3), np.uint8), given_rows=9),
              r'^given_rows=9 is not an integer in \[0, 8\] \(the image has 8 rows\)$', ('given_rows',)),
             (dict(h=h[:2], given_rows=2.5), r'^given_rows=2.5 is not an integer', ('given_rows',)),
             (dict(), '^this model is conditioned on 10 labels: pass h', ('h',)),
             (dict(h=h[:2], image_shape=(8, 8, 1)), r"^image_shape=\(8, 8, 1\) does not have the model's 3 channels$",
              ('image_shape',)),
             (dict(h=h[:2], image_shape=(8, 10, 3)), '^image_shape must be .* multiples of 4', ('image_shape',))]
    for kwargs, message, fields in cases:
        with pytest.raises(ConfigError, match=message) as e:
            pixel_cnn_pp.sample(model, 2, **dict(dict(image_shape=(8, 8, 3)), **kwargs))
        assert e.value.fields == fields
    with pytest.raises(ConfigError, match='not built yet'):
        pixel_cnn_pp.sample(PixelCNNPP(), 1)
    energy = PixelCNNPP(nr_resnet=1, nr_filters=8, energy_distance=True)
    energy(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ConfigError, match='use method=naive$'):
        pixel_cnn_pp.sample(energy, 1, image_shape=(8, 8, 3))
    with pytest.raises(ConfigError, match='this model is unconditional: h must be None'):
        pixel_cnn_pp.sample(shared(3, False)[0], 2, h=h[:2], image_shape=(8, 8, 3))


def run_sample_py(*args):
    """sample.py in this process (its real process: test_cli's bad-flag test)."""
    return conftest.run_in_process('sample.py', *args, status=0)[1]


def test_sample_py_completes_images(tmp_path):
    """--complete on an official checkpoint (no model flags: its config comes from its
    shapes): the first --given_rows rows of each image kept, --samples_per_image completions
    each, at --temperature, batch by batch as pixel_cnn_pp.sample draws them; the grid has
    one row per image: original, kept rows, completions."""
    import os
    from conftest import FIXTURES
    ckpt = os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt')
    originals = np.random.default_rng(3).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / 'in.npz', x=originals)
    out = run_sample_py('--checkpoint=' + ckpt, '--image_size=8', '--complete=%s' % (tmp_path / 'in.npz'),
                        '--num_samples=2', '--given_rows=3', '--samples_per_image=2', '--temperature=0.8',
                        '--batch_size=3', '--seed=2', '--out=%s' % (tmp_path / 'c'))
    lines = out.splitlines()
    assert lines[0].startswith('loaded %s (EMA weights): ' % ckpt)
    assert 'completing 2 images, 2 completions each (4 samples) at temperature 0.8 (fast sampler)' in lines
    assert 'images/s' in out
    saved = np.load(tmp_path / 'c.npz')
    np.testing.assert_array_equal(saved['given'], originals[:2])
    model = pixel_cnn_pp.load(ckpt, image_shape=(8, 8))
    given = np.repeat(originals[:2], 2, axis=0)
    kw = dict(given_rows=3, temperature=0.8)  # batches of 3 and 1, seeds --seed + first index
    expected = np.concatenate([pixel_cnn_pp.sample(model, 3, seed=2, given=given[:3], **kw),
                               pixel_cnn_pp.sample(model, 1, seed=5, given=given[3:], **kw)])
    np.testing.assert_array_equal(saved['samples'], expected)
    np.testing.assert_array_equal(saved['samples'][:, :3], given[:, :3])
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / 'c.png'))).numpy()
    assert grid.shape == (2 * 9 + 1, 4 * 9 + 1, 3)
    np.testing.assert_array_equal(grid[10:18, 1:9], originals[1])
    assert (grid[10 + 3:18, 10:18] == 128).all()  # the rows left to complete, gray
    np.testing.assert_array_equal(grid[10:18, 28:36], expected[3])


@pytest.mark.slow
def test_sample_py_compiles_each_kind_of_row_once(tmp_path):
    """sample.py --jit_compile: XLA compiles the pixel loop once per kind of row (3), not once
    per row (8), counted as the executables it writes to a persistent XLA cache; the images
    are the non-XLA sampler's."""
    import os
    import subprocess
    import sys
    from conftest import FIXTURES
    ckpt = os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root,
               TF_XLA_FLAGS='--tf_xla_persistent_cache_directory=%s' % (tmp_path / 'xla'))
    out = subprocess.run([sys.executable, os.path.join(root, 'sample.py'), '--checkpoint=' + ckpt,
                          '--image_size=8', '--num_samples=2', '--jit_compile', '--out=%s' % (tmp_path / 's')],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(os.listdir(tmp_path / 'xla')) == 3
    model = pixel_cnn_pp.load(ckpt, image_shape=(8, 8))
    np.testing.assert_array_equal(np.load(tmp_path / 's.npz')['samples'], pixel_cnn_pp.sample(model, 2, seed=1))


def test_sample_py_class_grid(tmp_path):
    """A class-conditional model without --labels: one grid row per class."""
    import os
    from conftest import FIXTURES
    ckpt = os.path.join(FIXTURES, 'official_configs', 'relu_r1_f8_m2_cond4', 'params.ckpt')
    run_sample_py('--checkpoint=' + ckpt, '--resnet_nonlinearity=relu', '--image_size=8,12',
                  '--num_samples=7', '--out=%s' % (tmp_path / 's'))
    saved = np.load(tmp_path / 's.npz')
    np.testing.assert_array_equal(saved['labels'], [0, 0, 1, 1, 2, 2, 3, 3])
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / 's.png'))).numpy()
    assert grid.shape == (4 * 9 + 1, 2 * 13 + 1, 3)
    model = pixel_cnn_pp.load(ckpt, resnet_nonlinearity='relu', image_shape=(8, 12))
    np.testing.assert_array_equal(
        saved['samples'], pixel_cnn_pp.sample(model, 8, h=tf.one_hot(saved['labels'], 4), seed=1))


def test_the_sampler_follows_the_models_plan():
    """Model and fast sampler walk the one plan: rewire it (level 1's two down-pass blocks
    swapped, so each takes the other's short-cut) and the sampler follows (a sampler with
    its own copy of the layer order would not)."""
    rewired, _ = initialised(3, False)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    before = rewired(x).numpy()
    down = rewired.plan.down_pass
    assert all(isinstance(layer, pixel_cnn_pp.nn.GatedResnet) for layer in down[2] + down[3])
    rewired.plan.down_pass = down[:2] + (down[3], down[2]) + down[4:]
    assert np.abs(rewired(x) - before).max() > 1e-3  # a different network
    naive = pixel_cnn_pp.sample(rewired, 2, seed=3, method='naive', image_shape=(8, 8, 3))
    np.testing.assert_array_equal(pixel_cnn_pp.sample(rewired, 2, seed=3, image_shape=(8, 8, 3)), naive)
