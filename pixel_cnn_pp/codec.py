"""PixelCNN++ as a lossless image codec: each sub-pixel is entropy coded (constriction's
range coder) with the 256-value distribution of the model's discretized logistic mixture,
so that a file takes -log2 p(x) bits plus a small overhead.

Encoder and decoder must compute the same floats, bit for bit: the decoder can only run
the fast sampler's cached pixel-by-pixel computation (sampling.fast.FastSampler), so the
encoder runs that same computation, with the same batch size and grouping, fed the known
pixels: the sampler's own traced row (sampling.coding.CodingPass). Decoding, it hands the
network's output at each pixel to the coder (a tf.numpy_function in the row's loop) and
writes back the pixel the coder returns; encoding, it writes the known pixels and the
coder codes each finished row in a thread while the next row computes, with the same
per-pixel calls. XLA (jit_compile) is not used: its compiled loop cannot call back into
Python.

File layout (little-endian): a 45-byte header (_HEADER: magic, format version, flags,
image shape, count, batch size, model fingerprint, the environment that fixes the floats,
a checksum of the pixels and labels), the range coder's 32-bit words (a conditional
model's labels first, log2 K bits each, then the sub-pixels in the passes' order), and a
CRC-32 of all that precedes it. So a file is -log2 p(x) plus 49 bytes, the coder's last
word and its quantization of the probabilities (24-bit)."""

import hashlib
import importlib.metadata
import os
import platform
import re
import struct
import zlib

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import config, nn, sampling
from pixel_cnn_pp.images import scale

MAGIC = b'PC++'
VERSION = 1
_HEADER = struct.Struct('<4sBBHHBIH8s3B3B3BBBB8s')
_CONDITIONAL, _GPU, _ONEDNN, _TF32 = 1, 2, 4, 8
ISAS = ('other', 'x86-64', 'avx2', 'avx512f', 'arm64')
# the bin edges of discretized_mix_logistic_loss between values v - 1 and v, scaled to
# [-1, 1]: x(v) - 1/255 = (v - 128) / 127.5, v = 1 .. 255
_EDGES = (np.arange(1, 256) - 128.) / 127.5


class CodecError(ValueError):
    """A file this codec will not decode into exactly the images it was made from:
    damaged, truncated, not a codec file, another model, or another environment."""


def channel_pmfs(l, channels):
    """The 256-value distributions of one pixel's sub-pixels, channel by channel, from the
    network's output l (B, P) at that pixel, as discretized_mix_logistic_loss's terms
    (bins of width 2/255, the first and last open to -inf and +inf; RGB: green's means
    + tanh(c0) * red, blue's + tanh(c1) * red + tanh(c2) * green), in float64.

    A generator: yields channel 0's pmfs (B, 256); send it that channel's values (B,)
    to get channel 1's, which are p(x_1 | x_0): the mixture's weights become the
    components' posteriors given the values sent, so that the channels' pmfs at their
    values multiply to the loss's p(x). Encoder and decoder both use it, so that their
    probabilities are the same bits."""
    l = np.asarray(l, np.float64)
    B, M = len(l), l.shape[-1] // nn.num_mixture_params(channels)
    rest = l[:, M:].reshape(B, channels, -1)
    means, inv_scales = rest[..., :M], np.exp(-np.maximum(rest[..., M:2 * M], -7.))[..., None]
    coeffs = np.tanh(rest[..., 2 * M:])
    w = np.exp(l[:, :M] - l[:, :M].max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    rows = np.arange(B)
    x = []
    for c in range(channels):
        mu = nn.coupled_mean(means[:, c], [coeffs[:, k] for k in range(coeffs.shape[1])], x)
        cdf = mu[..., None] - _EDGES  # (B, M, 255): each component's CDF at the edges,
        cdf *= inv_scales[:, c]       # 1 / (1 + exp((mu - edge) / s)), in place
        with np.errstate(over='ignore'):
            np.exp(cdf, out=cdf)
        cdf += 1.
        np.reciprocal(cdf, out=cdf)
        # the mixture's CDF, then its bins (4x faster than mixing the components' bins)
        mixed = np.matmul(w[:, None, :], cdf)[:, 0]
        pmf = np.empty((B, 256))
        pmf[:, 0], pmf[:, 255] = mixed[:, 0], 1. - mixed[:, -1]
        np.subtract(mixed[:, 1:], mixed[:, :-1], out=pmf[:, 1:255])
        values = yield np.maximum(pmf, 0., out=pmf)  # (a SIMD exp need not be monotone)
        if c + 1 < channels:
            values = np.asarray(values).astype(np.int64)
            x.append(((values - 127.5) / 127.5)[:, None])
            # the components' posterior: the weights times each one's bin at the value
            above = np.where((values < 255)[:, None], cdf[rows, :, np.minimum(values, 254)], 1.)
            below = np.where((values > 0)[:, None], cdf[rows, :, np.maximum(values - 1, 0)], 0.)
            posterior = w * np.maximum(above - below, 0.)
            total = posterior.sum(axis=1, keepdims=True)
            w = np.where(total > 0, posterior / np.where(total > 0, total, 1.), w)


def pixel_pmfs(l, pixels):
    """The pmfs (B, C, 256) of known pixels (uint8 (B, C)) given the network's output l
    (B, P) there, each channel's given the values before it (channel_pmfs)."""
    pixels = np.asarray(pixels)
    pmfs = channel_pmfs(l, pixels.shape[1])
    out = [next(pmfs)]
    for c in range(1, pixels.shape[1]):
        out.append(pmfs.send(pixels[:, c - 1]))
    return np.stack(out, 1)


def _version(text):
    numbers = [min(int(n), 255) for n in re.findall(r'\d+', text)[:3]]
    return tuple(numbers + [0] * (3 - len(numbers)))


def _isa():
    machine = platform.machine().lower()
    if machine in ('aarch64', 'arm64'):
        return 'arm64'
    if machine not in ('x86_64', 'amd64'):
        return 'other'
    try:
        with open('/proc/cpuinfo') as f:
            flags = next((line for line in f if line.startswith('flags')), '').split()
    except OSError:
        flags = []
    return 'avx512f' if 'avx512f' in flags else 'avx2' if 'avx2' in flags else 'x86-64'


def environment():
    """What fixes the floats of the cached computation and of the pmfs, as a file
    records it: the versions of TensorFlow, NumPy and constriction, the device kind
    (GPU if TensorFlow sees one), the CPU's vector instructions, TensorFlow's intra-op
    threads (they split reductions), whether oneDNN's kernels are on, the graph optimizer
    (Grappler's rewrites, e.g. fused matmuls, change the round-off: 'default', 'off' or
    'custom N', N a hash of its options) and on a GPU whether TensorFloat-32 is on."""
    threads = tf.config.threading.get_intra_op_parallelism_threads()
    if not threads:  # TensorFlow's default: the CPUs this process may run on
        threads = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return dict(tensorflow=_version(tf.__version__), numpy=_version(np.__version__),
                constriction=_version(importlib.metadata.version('constriction')),
                device='GPU' if tf.config.list_logical_devices('GPU') else 'CPU', isa=_isa(),
                threads=min(int(threads), 255),
                onednn=os.environ.get('TF_ENABLE_ONEDNN_OPTS', '1').lower() not in ('0', 'false'),
                graph_optimizer=_graph_optimizer(),
                tf32=bool(tf.config.list_logical_devices('GPU'))
                and tf.config.experimental.tensor_float_32_execution_enabled())


def _graph_optimizer():
    """The graph optimizer's settings as a byte: 0 default, 1 off, else a hash."""
    options = tf.config.optimizer.get_experimental_options()
    if options.get('disable_meta_optimizer'):
        return 1
    custom = sorted((k, v) for k, v in options.items() if v not in (False, None))
    return 0 if not custom else 2 + zlib.crc32(repr(custom).encode()) % 254


def _describe_graph_optimizer(code):
    return 'default' if code == 0 else 'off' if code == 1 else 'custom %d' % code


def fingerprint(model):
    """8 bytes of the SHA-256 of what the model computes: its architecture, dtype policy,
    channels, labels and every weight's shape and bytes (the raw and the averaged weights
    of one run differ)."""
    config = model.get_config()
    digest = hashlib.sha256(repr((
        [config[k] for k in ('nr_resnet', 'nr_filters', 'nr_logistic_mix', 'resnet_nonlinearity',
                             'energy_distance')],
        model.dtype_policy.name, model.channels, model.num_labels)).encode())
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(repr((value.shape, value.dtype.str)).encode())
        digest.update(value.tobytes())
    return digest.digest()[:8]


def _checksum(images, labels):
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    if labels is not None:
        digest.update(np.asarray(labels, np.int64).tobytes())
    return digest.digest()[:8]


def _passes(model, images, h, batch_size, callback, progress, known=False):
    """Runs the sampler's coding pass (sampling.coding.CodingPass) over the images in batches of
    batch_size; callback(start, i, j, l) gets the output at (i, j) of the batch that starts
    at image `start`; known: the images are the pixels (encoding); progress(rows done,
    rows in all)."""
    N, H = len(images), images.shape[1]
    sampler = sampling.sampler(model, images.shape[1:], h is not None)  # the sampler's trace
    batches = range(0, N, batch_size)
    for k, start in enumerate(batches):
        report = None if progress is None else (lambda rows, k=k: progress(k * H + rows, len(batches) * H))
        sampler.coding.run(min(batch_size, N - start), None if h is None else h[start:start + batch_size],
                           lambda i, j, l, start=start: callback(start, i, j, l), report,
                           scale(images[start:start + batch_size]) if known else None)


def _labels_of(model, h, labels, n):
    """The labels (int64 (N,)) of a conditional model's images from h (one-hot) or labels."""
    K = model.num_labels
    if not K:
        if h is not None or labels is not None:
            raise ValueError('this model is unconditional: pass neither h nor labels')
        return None
    if (h is None) == (labels is None):
        raise ValueError('this model is class-conditional: pass the images\' labels (N,) or '
                         'their one-hot h (N, %d)' % K)
    if h is not None:
        h = np.asarray(h)
        if h.shape != (n, K) or not np.all((h == 0) | (h == 1)) or not np.all(h.sum(1) == 1):
            raise ValueError('h must be one-hot rows (N, %d) = (%d, %d) (the file stores labels), '
                             'got shape %s' % (K, n, K, h.shape))
        return np.argmax(h, axis=1)
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) or \
            (n and (labels.min() < 0 or labels.max() >= K)):
        raise ValueError('labels must be N = %d integers in [0, %d), got %s %s'
                         % (n, K, labels.dtype, labels.shape))
    return labels.astype(np.int64)


def _family():
    import constriction
    return constriction.stream.model.Categorical(perfect=False)


def _uniform(K):
    """The model the labels are coded with: uniform over K (log2 K bits each)."""
    import constriction
    return constriction.stream.model.Categorical(np.full(K, 1. / K), perfect=False)


def compress(model, images, h=None, labels=None, batch_size=16, verify=True, progress=None):
    """The bytes of a file holding uint8 images (N, H, W, C) (H and W multiples of 4, C the
    model's channels), coded with the model: -log2 p(x) bits (log_prob) plus at most 53
    bytes and about 0.01%. A class-conditional model codes each image given its label
    (labels (N,) or one-hot h (N, K)), which the file stores (log2 K bits each).
    batch_size: images per pass (the file records it; the decoder uses the same).
    verify=True decodes the file before returning it, raising CodecError unless it gives
    the images back: about as long as the encoding again. progress(rows done, rows in all)
    is called after each image row of a pass."""
    import constriction
    model.require('code with')
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError('images must be uint8 (N, H, W, C) pixel values 0..255, got %s' % images.dtype)
    config.check_images(images.shape, 'images', (model.channels,))
    if not 0 < len(images) < 2 ** 32 or max(images.shape[1:3]) >= 2 ** 16:  # the header's fields
        raise ValueError('images must be (N, H, W, %d) with 1 <= N < 2^32 and H, W < 65536, got shape %s'
                         % (model.channels, images.shape))
    if not 1 <= batch_size < 2 ** 16:
        raise ValueError('batch_size must be in [1, 65535], got %r' % batch_size)
    labels = _labels_of(model, h, labels, len(images))
    N, H, W, C = images.shape
    onehot = None if labels is None else tf.one_hot(labels, model.num_labels)
    family, encoder = _family(), constriction.stream.queue.RangeEncoder()
    if labels is not None:
        encoder.encode(labels.astype(np.int32), _uniform(model.num_labels))

    def encode(start, i, j, l):
        pixels = images[start:start + len(l), i, j]
        pmfs = channel_pmfs(l, C)
        pmf = next(pmfs)
        for c in range(C):
            values = pixels[:, c].astype(np.int32)
            encoder.encode(values, family, pmf)
            if c + 1 < C:
                pmf = pmfs.send(values)
        return pixels

    _passes(model, images, onehot, batch_size, encode, progress, known=True)
    env = environment()
    flags = (_CONDITIONAL if labels is not None else 0) | (_GPU if env['device'] == 'GPU' else 0) | \
        (_ONEDNN if env['onednn'] else 0) | (_TF32 if env['tf32'] else 0)
    body = _HEADER.pack(MAGIC, VERSION, flags, H, W, C, N, batch_size, fingerprint(model),
                        *env['tensorflow'], *env['numpy'], *env['constriction'], ISAS.index(env['isa']),
                        env['threads'], env['graph_optimizer'], _checksum(images, labels)) + \
        encoder.get_compressed().astype('<u4').tobytes()
    out = body + struct.pack('<I', zlib.crc32(body))
    if verify:
        decoded = decompress(model, out)
        if labels is not None:
            decoded = decoded[0]
        if not np.array_equal(decoded, images):  # decompress's checksum makes this unreachable
            raise CodecError('the file did not decode to the images')
    return out


def _decode(model, images, labels, batch_size, decoder, progress=None):
    """Fills images (uint8 (N, H, W, C)) with what the range decoder decodes, batch by
    batch, given the labels of a conditional model (else None)."""
    C = images.shape[-1]
    family = _family()

    def decode(start, i, j, l):
        pmfs = channel_pmfs(l, C)
        pmf = next(pmfs)
        for c in range(C):
            values = decoder.decode(family, pmf)
            images[start:start + len(l), i, j, c] = values
            if c + 1 < C:
                pmf = pmfs.send(values)
        return images[start:start + len(l), i, j]

    onehot = None if labels is None else tf.one_hot(labels, model.num_labels)
    _passes(model, images, onehot, batch_size, decode, progress)


def read_header(data):
    """The header of a codec file as a dict, after checking its magic, version, length
    and CRC-32 (CodecError otherwise)."""
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise CodecError('not a PixelCNN++ codec file (it does not start with %r)' % MAGIC)
    if (len(data) - _HEADER.size - 4) % 4 or len(data) < _HEADER.size + 8 or \
            zlib.crc32(data[:-4]) != struct.unpack('<I', data[-4:])[0]:
        raise CodecError('damaged or truncated: the CRC-32 of its %d bytes does not match' % len(data))
    fields = _HEADER.unpack_from(data)
    if fields[1] != VERSION:
        raise CodecError('format version %d; this codec reads version %d' % (fields[1], VERSION))
    (_, _, flags, H, W, C, N, batch_size, model, *rest) = fields
    return dict(version=VERSION, conditional=bool(flags & _CONDITIONAL), image_shape=(H, W, C),
                count=N, batch_size=batch_size, model=model, checksum=rest[12],
                environment=dict(tensorflow=tuple(rest[0:3]), numpy=tuple(rest[3:6]),
                                 constriction=tuple(rest[6:9]), device='GPU' if flags & _GPU else 'CPU',
                                 isa=ISAS[rest[9]] if rest[9] < len(ISAS) else 'unknown', threads=rest[10],
                                 onednn=bool(flags & _ONEDNN), graph_optimizer=rest[11],
                                 tf32=bool(flags & _TF32)))


def _describe(name, value):
    if name == 'graph_optimizer':
        return 'graph optimizer %s' % _describe_graph_optimizer(value)
    if isinstance(value, tuple):
        return '%s %s' % (name, '.'.join(map(str, value)))
    if isinstance(value, bool):
        return '%s %s' % (name, 'on' if value else 'off')
    return '%s %s' % (name, value)


def decompress(model, data, check_environment=True, progress=None):
    """The uint8 images (N, H, W, C) of a file compress() wrote with this model; for a
    class-conditional model (images, labels). Raises CodecError, and never returns other
    pixels, for a file that is damaged, truncated or not a codec file, made with another
    model (other weights, the raw instead of the averaged ones), or in an environment
    whose floats may differ (environment(): the error names what differs;
    check_environment=False tries anyway, the pixels' checksum still refusing a wrong
    result). progress as for compress."""
    import constriction
    model.require('code with')
    data = bytes(data)
    header = read_header(data)
    H, W, C = header['image_shape']
    N = header['count']
    if header['model'] != fingerprint(model):
        raise CodecError('made with another model (other weights or architecture; the raw and '
                         'the averaged weights of a run differ): decode with the model that wrote it')
    if not config.fits((H, W, C), (model.channels,)) or not N or not header['batch_size'] or \
            header['conditional'] != bool(model.num_labels):
        raise CodecError('a header that does not fit the model: images %s, count %d, batch %d%s'
                         % (header['image_shape'], N, header['batch_size'],
                            ', conditional' if header['conditional'] else ''))
    if check_environment:
        here, there = environment(), header['environment']
        differ = [k for k in here if here[k] != there[k]]
        if differ:
            raise CodecError('written where the floats may differ from here (%s; here: %s): decode '
                             'on the kind of machine that wrote it, or pass check_environment=False '
                             'to try (a wrong result is still refused)'
                             % (', '.join(_describe(k, there[k]) for k in differ),
                                ', '.join(_describe(k, here[k]) for k in differ)))
    stream = np.frombuffer(data, '<u4', (len(data) - _HEADER.size - 4) // 4, _HEADER.size)
    decoder = constriction.stream.queue.RangeDecoder(stream.astype(np.uint32))
    images = np.zeros((N, H, W, C), np.uint8)
    try:
        labels = decoder.decode(_uniform(model.num_labels), N).astype(np.int64) \
            if header['conditional'] else None
        _decode(model, images, labels, header['batch_size'], decoder, progress)
    except (AssertionError, ValueError) as e:  # constriction: data invalid for the model
        raise CodecError('the stream does not decode with this model (%s): the file is damaged '
                         'or was written where the floats differ' % e) from None
    if _checksum(images, labels) != header['checksum']:
        raise CodecError('the decoded pixels do not match the checksum: the file was written where '
                         'the floats differ from here, or is damaged')
    return images if labels is None else (images, labels)
