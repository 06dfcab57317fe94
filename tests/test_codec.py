"""The lossless codec: bit-exact round trips, files at the model's -log2 p(x), and an error
(never other pixels) for every file it cannot decode exactly."""

import os
import struct
import subprocess
import sys
import zlib

import constriction
import numpy as np
import pytest
import tensorflow as tf

import pixel_cnn_pp
from pixel_cnn_pp import PixelCNNPP, codec, nn
from pixel_cnn_pp.images import scale
from conftest import FIXTURES, run_in_process, uint8_images

SHAPE = (4, 8, 3)  # non-square; levels 4x8, 2x4, 1x2
K = 4


def small_model(channels=3, num_labels=0, seed=0, size=SHAPE[:2], sharpen=4., mix=3):
    """A random small model, its logistics made narrower than at initialisation (the
    head's log-scale biases - sharpen), so that its distributions are far from uniform."""
    model = PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=mix, num_labels=num_labels)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (4,) + size + (channels,)).astype(np.float32)
    model(x, h=tf.one_hot(np.arange(4) % num_labels, num_labels) if num_labels else None, init=True)
    M, per = model.nr_logistic_mix, 3 if channels == 3 else 2
    b = model.head[0].b.numpy()
    for c in range(channels):
        b[M + c * per * M + M:M + c * per * M + 2 * M] -= sharpen
    model.head[0].b.assign(b)
    return model


@pytest.fixture(scope='module')
def model():
    """One conditional RGB model for the module: its coding sampler is traced once."""
    return small_model(num_labels=K)


def model_samples(model, labels, shape=SHAPE, seed=0):
    """Images the model finds likely: random bits decoded with it by an ANS coder (a sample
    of the coder's distribution, which is the model's up to its quantization)."""
    words = np.random.default_rng(seed).integers(1, 2 ** 32, 100000, dtype=np.uint32)
    out = np.zeros((len(labels),) + shape, np.uint8)
    codec._decode(model, out, labels, 16, constriction.stream.stack.AnsCoder(words))  # any bits decode
    return out


def output(model, x, labels=None):
    """The full forward pass's output l on uint8 images."""
    return model(scale(x), h=None if labels is None else tf.one_hot(labels, model.num_labels))


def ideal_bytes(model, x, labels):
    """-log2 p(x | labels) - log2 (1 / K) per label, in bytes: the official loss (nats) / ln 2
    and the labels' uniform code."""
    nats = float(nn.discretized_mix_logistic_loss(scale(x), output(model, x, labels)))
    return (nats / np.log(2.) + len(labels) * np.log2(model.num_labels)) / 8.


@pytest.fixture(scope='module')
def likely(model):
    """12 images the module's model finds likely, and their labels."""
    labels = np.arange(12) % K
    return model_samples(model, labels), labels


def check_pmfs(model, x, labels=None):
    """pixel_pmfs from the full forward pass's output: each sums to one and -log2 of the
    pmfs at the pixels' values, summed over the channels, is the bits of the official
    loss's per-pixel terms on the same output (an independent check of the bins, the RGB
    coupling and the mixture's posterior)."""
    N, H, W, C = x.shape
    l = output(model, x, labels)
    pmfs = codec.pixel_pmfs(l.numpy().reshape(N * H * W, -1), x.reshape(-1, C))
    assert pmfs.shape == (N * H * W, C, 256) and pmfs.dtype == np.float64
    np.testing.assert_allclose(pmfs.sum(-1), 1., atol=1e-12)
    at = np.take_along_axis(pmfs, x.reshape(-1, C, 1).astype(np.int64), -1)[..., 0]
    bits = -np.log2(at).sum(-1).reshape(N, H, W)
    expected = -nn.discretized_mix_logistic_log_prob(scale(x), l).numpy() / np.log(2.)
    np.testing.assert_allclose(bits, expected, atol=1e-3 * C)
    return pmfs, l.numpy().reshape(N * H * W, -1), -np.log2(at)


def test_pmfs_sum_to_one_and_give_the_loss(model, likely):
    x, labels = likely
    pmfs, l, bits = check_pmfs(model, x, labels)
    assert 1.5 < bits.mean() < 6  # a sharp model's, not a uniform one's 8
    # green's and blue's pmfs depend on the values before them
    other = x.reshape(-1, 3).copy()
    other[:, 0] ^= 64
    assert np.abs(codec.pixel_pmfs(l, other)[:, 1] - pmfs[:, 1]).max() > 0.1


def test_grayscale_pmfs():
    model = small_model(1, size=(8, 8), sharpen=1.)
    _, _, bits = check_pmfs(model, uint8_images((3, 8, 8, 1), seed=1))
    assert bits.mean() > 4


def test_round_trips(model):
    """Bit-exact: 5 images in batches of 2 (the last one image), a single image (with its
    label as one-hot h); decompress returns the labels; verify=True decodes the file."""
    x, labels = uint8_images((5,) + SHAPE, seed=1), np.array([3, 0, 1, 2, 3])
    five = pixel_cnn_pp.compress(model, x, labels=labels, batch_size=2, verify=False)
    assert codec.read_header(five)['batch_size'] == 2
    back, back_labels = pixel_cnn_pp.decompress(model, five)
    np.testing.assert_array_equal(back, x)
    np.testing.assert_array_equal(back_labels, labels)
    one = pixel_cnn_pp.compress(model, x[2:3], h=tf.one_hot([1], K))  # verify=True
    assert one == pixel_cnn_pp.compress(model, x[2:3], labels=[1], verify=False)
    back, back_labels = pixel_cnn_pp.decompress(model, one)
    np.testing.assert_array_equal(back, x[2:3])
    assert back_labels.tolist() == [1]
    with pytest.raises(ValueError, match='class-conditional: pass'):
        pixel_cnn_pp.compress(model, x)
    with pytest.raises(ValueError, match='one-hot'):
        pixel_cnn_pp.compress(model, x, h=np.full((5, K), .25))


@pytest.mark.parametrize('channels,mix,seed,sharpen', [(1, 3, 5, 0.), (3, 2, 6, 2.), (3, 5, 7, 6.), (1, 1, 8, 3.)])
def test_unconditional_round_trips(channels, mix, seed, sharpen):
    """Unconditional models of other seeds, mixture sizes (fewer logistics than channels, as
    the tests' usual small model, too) and channel counts: the encoder (which codes finished
    rows beside the next row's computation) and the decoder (pixel by pixel) see the same
    floats, so 4 images in batches of 3 come back bit-exact."""
    tf.random.set_seed(seed)
    model = small_model(channels, seed=seed, sharpen=sharpen, mix=mix)
    x = uint8_images((4,) + SHAPE[:2] + (channels,), seed=seed)
    data = pixel_cnn_pp.compress(model, x, batch_size=3, verify=False)
    np.testing.assert_array_equal(pixel_cnn_pp.decompress(model, data), x)


def test_the_codec_runs_the_samplers_trace(model):
    """Sampling, encoding and decoding at one image shape trace the sampler's row once: the
    codec runs the sampler's own step (and its files still round-trip)."""
    from pixel_cnn_pp import sampling
    x, labels = uint8_images((2,) + SHAPE, seed=3), np.array([0, 3])
    pixel_cnn_pp.sample(model, 2, h=tf.one_hot(labels, K), seed=0, image_shape=SHAPE)
    back, _ = pixel_cnn_pp.decompress(model, pixel_cnn_pp.compress(model, x, labels=labels, verify=False))
    np.testing.assert_array_equal(back, x)
    assert sampling.sampler(model, SHAPE, True).row.experimental_get_tracing_count() == 1


def test_file_is_at_the_ideal_length(model, likely):
    """On images the model finds likely, the file is -log2 p(x, labels) (the official loss,
    the labels uniform) plus at most 0.2% + 64 bytes (header, CRC, the coder's last word,
    quantized probabilities), and not below it (which would mean that the probabilities
    coded are not the model's)."""
    x, labels = likely
    ideal = ideal_bytes(model, x, labels)
    assert 1.5 < 8 * ideal / x.size < 6  # bits/dim of a sharp model, not a uniform one
    size = len(pixel_cnn_pp.compress(model, x, labels=labels, verify=False))
    assert ideal - 4 <= size <= 1.002 * ideal + 64, (size, ideal)


def reheader(data, **fields):
    """The file with header fields replaced (by _HEADER's position) and a valid CRC."""
    values = list(codec._HEADER.unpack_from(data))
    for position, value in fields.items():
        values[int(position[1:])] = value
    body = codec._HEADER.pack(*values) + data[codec._HEADER.size:-4]
    return body + struct.pack('<I', zlib.crc32(body))


def test_bad_files_raise_codec_error(model):
    """Each raises CodecError naming the cause; none returns pixels."""
    x, labels = uint8_images((3,) + SHAPE, seed=4), np.array([1, 2, 3])
    good = pixel_cnn_pp.compress(model, x, labels=labels, verify=False)
    bad = {'not a PixelCNN': [b'', b'PNG\x89' + good[4:]],
           'truncated': [good[:-1], good[:-4], good[:20], good[:codec._HEADER.size + 8], good + b'\0' * 4],
           'damaged': [good[:k] + bytes([good[k] ^ 1]) + good[k + 1:] for k in (5, 30, 60, len(good) - 2)],
           'version 2': [reheader(good, f1=2)],
           'tensorflow 2.20.0': [reheader(good, f9=2, f10=20, f11=0)],
           'does not fit the model': [reheader(good, f3=10)]}
    for message, files in bad.items():
        for f in files:
            with pytest.raises(codec.CodecError, match=message):
                pixel_cnn_pp.decompress(model, f)
    # past the CRC (a byte of the stream changed, the CRC made to match): the decoded
    # pixels differ, and the checksum refuses them
    k = codec._HEADER.size + 8
    forged = reheader(good[:k] + bytes([good[k] ^ 16]) + good[k + 1:])
    with pytest.raises(codec.CodecError, match='checksum|does not decode'):
        pixel_cnn_pp.decompress(model, forged)
    with pytest.raises(codec.CodecError, match='checksum'):
        pixel_cnn_pp.decompress(model, reheader(good, f21=b'\0' * 8))
    # another environment's file decodes on request here (its floats are in fact ours)
    back, _ = pixel_cnn_pp.decompress(model, reheader(good, f9=2, f10=20, f11=0), check_environment=False)
    np.testing.assert_array_equal(back, x)
    other = small_model(num_labels=K, seed=5)  # another model: refused before decoding
    with pytest.raises(codec.CodecError, match='another model'):
        pixel_cnn_pp.decompress(other, good)


def test_fingerprint():
    """The same checkpoint loaded twice (other Keras names) has one fingerprint; its raw
    and averaged weights, or one weight changed by one ulp, another."""
    ckpt = os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt')
    ema = pixel_cnn_pp.load(ckpt, image_shape=(8, 8))
    assert codec.fingerprint(ema) == codec.fingerprint(pixel_cnn_pp.load(ckpt, image_shape=(8, 8)))
    raw = pixel_cnn_pp.load(ckpt, image_shape=(8, 8), use_ema=False)
    assert codec.fingerprint(raw) != codec.fingerprint(ema)
    before = codec.fingerprint(raw)
    g = raw.head[0].g
    g.assign(np.nextafter(g.numpy(), np.inf))
    assert codec.fingerprint(raw) != before


def run_compress_py(*args, status=0):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, 'compress.py'), '--noprogress'] + list(args),
                         env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True, timeout=600)
    assert out.returncode == status, out.stderr
    return out


@pytest.mark.slow
def test_compress_py_round_trip_in_fresh_processes(tmp_path):
    """compress.py both ways, each in its own process, on a grayscale model: a folder of
    PNGs in, the file, then an .npz out, bit for bit; what it prints; images the model
    does not code refused with nothing written."""
    model = small_model(1, size=(8, 8), sharpen=2.)
    model.save(tmp_path / 'm.keras')
    x = uint8_images((5, 8, 8, 1), seed=1)
    (tmp_path / 'in').mkdir()
    for k, image in enumerate(x):
        pixel_cnn_pp.images.write_png(str(tmp_path / 'in' / ('%d.png' % k)), image)
    ckpt, f = '--checkpoint=%s' % (tmp_path / 'm.keras'), tmp_path / 'x.pcpp'
    out = run_compress_py(ckpt, '--in=%s' % (tmp_path / 'in'), '--out=%s' % f, '--batch_size=2').stdout
    assert 'bits/dim' in out and 'ideal' in out and 'PNG' in out and 'images/s decoding (verified)' in out
    assert codec.read_header(f.read_bytes())['batch_size'] == 2
    out = run_compress_py('--decompress', ckpt, '--in=%s' % f, '--out=%s' % (tmp_path / 'back.npz')).stdout
    assert 'decoded 5 images of 8x8x1' in out
    np.testing.assert_array_equal(np.load(tmp_path / 'back.npz')['x'], x)
    # this process runs without Grappler (conftest): the header's record differs, so the
    # file is refused; tried anyway it decodes, as the sampler's functions run without
    # Grappler whatever the process's setting (its rewrites would change the round-off)
    with pytest.raises(codec.CodecError, match='graph optimizer default; here: graph optimizer off'):
        pixel_cnn_pp.decompress(model, f.read_bytes())
    np.testing.assert_array_equal(pixel_cnn_pp.decompress(model, f.read_bytes(), check_environment=False), x)
    np.savez(tmp_path / 'rgb.npz', x=uint8_images((2, 8, 8, 3), seed=1))
    err = run_compress_py(ckpt, '--in=%s' % (tmp_path / 'rgb.npz'), '--out=%s' % (tmp_path / 'no.pcpp'),
                          status=2).stderr
    assert 'this model codes 1-channel images' in err and 'Traceback' not in err
    assert sorted(os.listdir(tmp_path)) == ['back.npz', 'in', 'm.keras', 'rgb.npz', 'x.pcpp']


@pytest.mark.slow
def test_round_trip_of_an_official_checkpoint():
    """Unconditional RGB, an official checkpoint's averaged weights: bit-exact, and the
    raw weights refuse the file."""
    ckpt = os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt')
    model = pixel_cnn_pp.load(ckpt, image_shape=(8, 8))
    x = uint8_images((3, 8, 8, 3), seed=1)
    data = pixel_cnn_pp.compress(model, x, batch_size=2)
    np.testing.assert_array_equal(pixel_cnn_pp.decompress(model, data), x)
    with pytest.raises(codec.CodecError, match='another model'):
        pixel_cnn_pp.decompress(pixel_cnn_pp.load(ckpt, image_shape=(8, 8), use_ema=False), data)


@pytest.mark.parametrize('decompress', [False, True])
def test_compress_py_keeps_an_existing_out(tmp_path, decompress):
    """An --out that exists is refused, not overwritten (as export.py does), both ways."""
    ckpt = '--checkpoint=' + os.path.join(FIXTURES, 'official_small', 'params_cifar.ckpt')
    np.savez(tmp_path / 'a.npz', x=uint8_images((1, 32, 32, 3)))
    out = tmp_path / ('back.npz' if decompress else 'a.pcpp')
    out.write_bytes(b'mine')
    args = ['--decompress', '--in=%s' % (tmp_path / 'a.pcpp')] if decompress else ['--in=%s' % (tmp_path / 'a.npz')]
    if decompress:
        (tmp_path / 'a.pcpp').write_bytes(b'PC++')
    _, _, err = run_in_process('compress.py', ckpt, *args, '--out=%s' % out, status=2)
    assert err.splitlines()[0] == 'compress.py: error: --out=%s already exists; choose a new path' % out
    assert out.read_bytes() == b'mine'
