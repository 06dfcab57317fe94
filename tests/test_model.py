"""PixelCNNPP: structure, the autoregressive property, checkpointing and input errors."""

import numpy as np
import pytest
import tensorflow as tf

import pixel_cnn_pp
from pixel_cnn_pp import PixelCNNPP
from pixel_cnn_pp.config import ConfigError
from conftest import SMALL, images


def small_model(**kwargs):
    return PixelCNNPP(**dict(SMALL, **kwargs))


@pytest.fixture(scope='module')
def model():
    """One initialised unconditional RGB small model for the tests that only call it."""
    model = small_model()
    model(images((4, 8, 8, 3)), init=True)
    return model


def test_paper_size_parameter_count():
    model = PixelCNNPP()
    model(tf.zeros([1, 4, 4, 3]))  # the weights do not depend on the image size
    assert sum(int(np.prod(v.shape)) for v in model.trainable_weights) == 53_659_080
    assert len(model.official_variables()) == len(model.trainable_weights) == 567


@pytest.mark.parametrize('channels, outputs', [(3, 10 * 2), (1, 3 * 2)])
def test_output_shape_and_init(channels, outputs):
    model = small_model()
    x = images((4, 8, 12, channels))
    out = model(x, init=True, training=True)
    assert out.shape == (4, 8, 12, outputs)
    # after the init pass the final nin's output is normalised on the init batch
    np.testing.assert_allclose(np.asarray(out).mean(axis=(0, 1, 2)), 0., atol=1e-4)
    np.testing.assert_allclose(np.asarray(out).var(axis=(0, 1, 2)), 1., rtol=1e-3)
    loss = pixel_cnn_pp.nn.discretized_mix_logistic_loss(x, model(x))
    assert np.isfinite(loss.numpy())


def test_official_variable_names():
    model = small_model(num_labels=10)
    model(images((2, 8, 8, 3)), h=tf.one_hot([1, 2], 10))
    names = list(model.official_variables())
    # one nin per block that takes a short-cut input: 3 ul blocks on the way up, 1 + 2 + 2 pairs
    # on the way down, so the final nin is dense_13; every block has conditional weights
    assert names[:6] == ['conv2d_0/V', 'conv2d_0/g', 'conv2d_0/b', 'conv2d_1/V', 'conv2d_1/g', 'conv2d_1/b']
    assert names[-3:] == ['dense_13/V', 'dense_13/g', 'dense_13/b']
    assert sum(n.endswith('/hw') for n in names) == 2 * (3 + 1 + 2 + 2)
    assert 'conditional_weights_15/hw' in names and 'deconv2d_1/V' in names


@pytest.mark.parametrize('nonlinearity', ['concat_elu', 'elu'])
def test_autoregressive_property(nonlinearity, model):
    """The logits at (i, j) depend on no input at or after (i, j) in raster order, in any
    channel, and do depend on the pixel to the left and the one above."""
    H = W = 8
    if nonlinearity != model.resnet_nonlinearity:
        model = small_model(resnet_nonlinearity=nonlinearity)
        model(images((4, H, W, 3)), init=True)
    # one copy of the image per output position: row b of the batch asks about pixel b
    x = tf.constant(np.repeat(images((1, H, W, 3), seed=1), H * W, axis=0))
    select = tf.reshape(tf.one_hot(tf.range(H * W), H * W), [H * W, H, W, 1])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out = model(x)
        total = tf.reduce_sum(out * select * tf.random.stateless_normal(out.shape, [0, 1]))
    grad = np.abs(tape.gradient(total, x).numpy()).sum(axis=-1).reshape(H * W, H * W)
    order = np.arange(H * W)
    for p in order:
        assert np.all(grad[p, order >= p] == 0.), p
        i, j = divmod(p, W)
        if j > 0:
            assert grad[p, p - 1] > 0, (i, j)
        if i > 0:
            assert grad[p, p - W] > 0, (i, j)


def test_conditioning_changes_output_and_keeps_causality():
    model = small_model(num_labels=10)
    x = tf.constant(images((2, 8, 8, 3)))
    h = tf.one_hot([3, 3], 10)
    model(x, h=h, init=True)
    a, b = model(x, h=h), model(x, h=tf.one_hot([3, 7], 10))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[1], b[1])


def test_dropout_only_in_training(model):
    assert model.dropout_p == 0.5
    x = images((2, 8, 8, 3), seed=3)
    np.testing.assert_array_equal(model(x), model(x))
    assert not np.allclose(model(x, training=True), model(x))


def test_energy_distance_head():
    model = small_model(energy_distance=True)
    x = images((2, 8, 8, 3))
    samples = model(x, init=True)
    assert len(samples) == 10 and all(s.shape == (2, 8, 8, 3) for s in samples)
    assert all(np.all(np.abs(s) <= 1.) for s in samples)
    assert np.isfinite(pixel_cnn_pp.nn.energy_distance(x, samples).numpy())
    assert list(model.official_variables())[-3:] == ['dense_16/V', 'dense_16/g', 'dense_16/b']


def test_tf_train_checkpoint_round_trip(tmp_path, model):
    x = images((2, 8, 8, 3), seed=1)
    expected = model(x)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / 'ckpt'))
    restored = small_model()
    restored(x)
    tf.train.Checkpoint(model=restored).read(path).assert_consumed()
    np.testing.assert_array_equal(restored(x), expected)


def test_works_in_tf_function_with_unknown_batch(model):
    x = images((3, 8, 8, 3), seed=2)
    eager = model(x)
    fn = tf.function(lambda x: model(x), input_signature=[tf.TensorSpec([None, 8, 8, 3])])
    np.testing.assert_allclose(fn(x), eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('precision, dtype, rtol', [('mixed_bfloat16', tf.bfloat16, 0.05),
                                                     ('mixed_float16', tf.float16, 0.01)])
def test_mixed_precision_computes_in_low_precision_with_float32_weights_and_outputs(
        precision, dtype, rtol):
    x, h = images((4, 8, 8, 3)), np.eye(10, dtype=np.float32)[[1, 2, 3, 4]]
    full = small_model(num_labels=10)
    expected = full(x, h=h, init=True)
    mixed = small_model(num_labels=10, dtype=precision)
    mixed(x, h=h)
    for k, v in mixed.official_variables().items():
        assert v.dtype == 'float32'
        v.assign(full.official_variables()[k])
    assert {layer.compute_dtype for layer in mixed.weight_norm_layers()} == {dtype.name}
    out = mixed(x, h=h)
    assert out.dtype == tf.float32
    # the network really ran in the low precision: close to float32, but not equal to it
    err = np.abs(out - expected).max() / np.abs(expected).max()
    assert 1e-5 < err < rtol
    # the data-dependent init works under the policy: the same g as in float32, to its precision
    mixed(x, h=h, init=True)
    for k, v in mixed.official_variables().items():
        if k.endswith('/g'):
            np.testing.assert_allclose(v.numpy(), full.official_variables()[k].numpy(), rtol=0.1)


@pytest.mark.parametrize('x, h, message', [
    (np.zeros((8, 8, 3)), None, '4-D'),
    (np.zeros((1, 8, 8, 2)), None, '1 .grayscale. or 3 .RGB. channels'),
    (np.zeros((1, 8, 8, 4)), None, '1 .grayscale. or 3 .RGB. channels'),
    (np.zeros((1, 10, 8, 3)), None, 'height and width that are positive multiples of 4'),
    (np.zeros((1, 8, 6, 3)), None, 'height and width that are positive multiples of 4'),
    (np.zeros((2, 8, 8, 3)), np.zeros((3, 10)), 'h has batch size 3 but x has 2'),
    (np.zeros((2, 8, 8, 3)), np.zeros((2, 10, 1)), r'h must be \(B, 10\) \(num_labels=10\), got shape \(2, 10, 1\)'),
    (np.zeros((2, 8, 8, 3)), np.zeros((2, 9)), r'h must be \(B, 10\) \(num_labels=10\), got shape \(2, 9\)'),
])
def test_bad_input_errors(x, h, message):
    with pytest.raises(ValueError, match=message):
        small_model(num_labels=0 if h is None else 10)(x.astype(np.float32), h=h)


def test_errors_after_build(model):
    with pytest.raises(ValueError, match='must have 3 channels'):
        model(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match=r'unconditional \(num_labels=0\): h must be None'):
        model(np.zeros((1, 8, 8, 3), np.float32), h=np.zeros((1, 10), np.float32))
    cond = small_model(num_labels=10)
    cond(np.zeros((1, 8, 8, 3), np.float32), h=np.zeros((1, 10), np.float32))
    with pytest.raises(ValueError, match=r'conditioned on 10 labels: pass h \(B, 10\)'):
        cond(np.zeros((1, 8, 8, 3), np.float32))


@pytest.mark.parametrize('kwargs, message', [
    (dict(resnet_nonlinearity='tanh'), '^resnet_nonlinearity=tanh is not one of concat_elu, elu, relu$'),
    (dict(nr_resnet=0), '^nr_resnet=0 is not a positive integer$'),
    (dict(nr_filters=2.5), 'is not a positive integer'),
    (dict(dropout_p=1.), r'^dropout_p=1.0 is not in \[0, 1\)$'),
])
def test_bad_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as e:
        PixelCNNPP(**kwargs)
    # the argument and its value, which cli.py says as the flag
    assert e.value.fields == tuple(kwargs) and e.value.values == kwargs


def test_the_plan_is_the_official_order():
    """Up: levels 0, 1, 2 of nr_resnet blocks, stride-2 convs into 1 and 2; down: levels 2,
    1, 0 of nr_resnet, nr_resnet + 1, nr_resnet + 1 blocks, transposed convs into 1 and 0;
    made once (the same tuples at every call), and the layers tracked once."""
    model = PixelCNNPP(nr_resnet=2, nr_filters=8, nr_logistic_mix=2)
    plan = model.plan
    assert plan.up_pass == tuple(zip(model.up_u[0], model.up_ul[0])) + (model.downsample[0],) + \
        tuple(zip(model.up_u[1], model.up_ul[1])) + (model.downsample[1],) + tuple(zip(model.up_u[2], model.up_ul[2]))
    assert plan.down_pass == tuple(zip(model.down_u[0], model.down_ul[0])) + (model.upsample[0],) + \
        tuple(zip(model.down_u[1], model.down_ul[1])) + (model.upsample[1],) + tuple(zip(model.down_u[2], model.down_ul[2]))
    assert [len(model.down_u[k]) for k in range(3)] == [2, 3, 3]
    assert model.plan is plan
    model.build((None, 8, 8, 3))
    assert len(model.weights) == len({id(w) for w in model.weights}) == len(model.official_variables())


def test_the_passes_pop_the_short_cuts_in_the_official_order():
    """What each down-pass block reads as its short-cut: the up pass's maps popped from the
    end of model_spec's lists (level 2's last first), each once; the ul block's short-cut
    is [u, ul]."""
    model = PixelCNNPP(nr_resnet=2, nr_filters=8, nr_logistic_mix=2)
    reads = []

    def gated_resnet(layer, x, *aux):
        reads.append((layer.name, x, aux))
        return layer.name

    model.plan.passes('u_in', 'ul_in', gated_resnet, lambda layer, x: layer.name)
    names = dict((name, (x, aux)) for name, x, aux in reads)
    u_up = [layer.name for level in model.up_u for layer in level]
    ul_up = [layer.name for level in model.up_ul for layer in level]
    down_u = [layer.name for level in model.down_u for layer in level]
    down_ul = [layer.name for level in model.down_ul for layer in level]
    # level 2 (2 blocks) then 1 and 0 (3 blocks each): the pops in reverse
    u_pushed = ['u_in'] + u_up[:2] + [model.downsample[0][0].name] + u_up[2:4] + [model.downsample[1][0].name] + u_up[4:]
    ul_pushed = ['ul_in'] + ul_up[:2] + [model.downsample[0][1].name] + ul_up[2:4] + [model.downsample[1][1].name] + ul_up[4:]
    assert [names[n][1] for n in down_u] == [(p,) for p in u_pushed[::-1][1:]]
    assert [names[n][1] for n in down_ul] == [(u, p) for u, p in zip(down_u, ul_pushed[::-1][1:])]
    assert names[down_u[0]][0] == u_up[-1] and names[down_ul[0]][0] == ul_up[-1]
    assert [names[n][1] for n in ul_up] == [(u,) for u in u_up]
