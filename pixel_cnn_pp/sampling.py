"""Drawing images from a PixelCNNPP (the grid and files they are written to: images.py)."""

import functools
import weakref

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import images, nn


def noise(shape, nr_mix, seed):
    """All the uniform noise one batch of images consumes, drawn up front so that every
    sampling method uses the same numbers for the same pixel."""
    dummy = tf.zeros(shape[:3] + (nn.num_mixture_params(shape[3]) * nr_mix,))
    return nn.mixture_noise(dummy, shape[3], seed)


def _signature(model, image_shape, conditional):
    """The inputs every sampler's row step takes after its own: the noise of noise(), the
    given image (scaled; its first given_rows rows are kept), given_rows, temperature and,
    for a conditional model, h. The batch size is left open."""
    H, W, C = image_shape
    spec = [tf.TensorSpec([None, H, W, model.nr_logistic_mix]), tf.TensorSpec([None, H, W, C]),
            tf.TensorSpec([None, H, W, C]), tf.TensorSpec([], tf.int32), tf.TensorSpec([])]
    return spec + ([tf.TensorSpec([None, model.num_labels])] if conditional else [])


class _NaiveSampler:
    """The official sample_from_model: a full forward pass per pixel, keeping pixel (i, j)
    of a sample drawn from that pass's output; one compiled step per image row."""

    def __init__(self, model, image_shape, conditional):
        self._model, self.image_shape = weakref.ref(model), tuple(image_shape)
        H, W, C = image_shape
        self.row = tf.function(self._row, input_signature=[
            tf.TensorSpec([None, H, W, C]), tf.TensorSpec([], tf.int32)] + _signature(model, image_shape, conditional))

    @property
    def model(self):
        return self._model()

    def _row(self, x, i, u_mix, u_logistic, given, given_rows, temperature, h=None):
        m = self.model
        H, W, C = self.image_shape

        def body(j, x):
            out = m(x, h=h)
            new = out[0] if m.energy_distance else nn.sample_with_noise(out, C, (u_mix, u_logistic), temperature)
            at = tf.reshape(tf.one_hot(i * W + j, H * W), [1, H, W, 1]) > 0
            return j + 1, tf.where(at, new, x)

        return tf.while_loop(lambda j, x: j < W, body, (tf.constant(0), x))[1]

    def draw(self, u_mix, u_logistic, given, given_rows, temperature, h=(), progress=None):
        H = self.image_shape[0]
        x = tf.where(tf.range(H)[None, :, None, None] < given_rows, given, tf.zeros_like(given))
        for i in range(H):
            if i >= given_rows:
                x = self.row(x, i, u_mix, u_logistic, given, given_rows, temperature, *h)
            if progress:
                progress(i + 1)
        return x


class _Cache:
    """One activation map of the fast sampler, stored position first: a variable of shape
    (rows * cols, B, C) whose entry r * cols + c is position (r, c) of every image, so that a
    pixel's step reads and writes only the positions it needs (slicing the variable itself
    would read, and copy, the whole map). The variable has one more row than the map, so
    that every row of the map starts a slab.

    While a row's pixels run (compiled by XLA, which takes no sparse reads or writes of
    variables), the cache reads and writes a slab instead: rows base .. base + 2 of the
    map as a tensor (3, cols, B, C), passed in and out of the compiled loop."""

    def __init__(self, level, rows, cols, channels):
        self.level, self.rows, self.cols, self.channels = level, rows, cols, channels
        self.var = tf.Variable(tf.zeros([(rows + 1) * cols, 0, channels]), trainable=False,
                               shape=[(rows + 1) * cols, None, channels])
        self.slab = self.base = None
        self.written = False

    def _index(self, r, nr, c, nc):
        return tf.reshape((r + tf.range(nr))[:, None] * self.cols + (c + tf.range(nc))[None, :], [-1])

    def read(self, r, nr, c=0, nc=None):
        """Rows r .. r + nr - 1, columns c .. c + nc - 1 (default: all) as (B, nr, nc, C)."""
        nc = self.cols if nc is None else nc
        if self.slab is not None:
            # gathers, not tf.slice: XLA would compile a slice's start in, once per row
            values = tf.gather(tf.gather(self.slab, r - self.base + tf.range(nr)), c + tf.range(nc), axis=1)
            return tf.transpose(values, [2, 0, 1, 3])
        values = self.var.sparse_read(self._index(r, nr, c, nc))
        return tf.transpose(tf.reshape(values, [nr, nc, -1, self.channels]), [2, 0, 1, 3])

    def put(self, r, c, value):
        """Writes value (B, nr, nc, C) at rows r.., columns c.."""
        if self.slab is not None:
            self.written = True
            nr, nc = tf.unstack(tf.shape(value)[1:3])
            rows, cols = tf.meshgrid(r - self.base + tf.range(nr), c + tf.range(nc), indexing='ij')
            self.slab = tf.tensor_scatter_nd_update(self.slab, tf.stack([rows, cols], 2),
                                                    tf.transpose(value, [1, 2, 0, 3]))
            return
        shape = tf.shape(value)
        values = tf.reshape(tf.transpose(value, [1, 2, 0, 3]), [-1, shape[0], self.channels])
        self.var.scatter_update(tf.IndexedSlices(values, self._index(r, shape[1], c, shape[2])))

    def load_slab(self, i):
        """The slab of image row i: the map's rows i // 2^level .. + 2."""
        base = i // 2 ** self.level
        return tf.reshape(self.var.sparse_read(self._index(base, 3, 0, self.cols)), [3, self.cols, -1, self.channels])

    def store_slab(self, i, slab):
        base = i // 2 ** self.level
        self.var.scatter_update(tf.IndexedSlices(tf.reshape(slab, [3 * self.cols, -1, self.channels]),
                                                 self._index(base, 3, 0, self.cols)))

    def use_slab(self, i, slab):
        """Reads and writes go to slab (None: back to the variable)."""
        self.slab, self.base = slab, None if slab is None else i // 2 ** self.level


def _window(cache, r, c, stride=1):
    """The 2-row (and for a position, 2-column) input window of the output at (r, c) of a
    shifted convolution with this stride; c None means the whole row (all columns, with
    the zero border the down-shifted 2x3 kernels pad with)."""
    return cache.read(stride * r, 2) if c is None else cache.read(stride * r, 2, stride * c, 2)


def _center(cache, r, c):
    return cache.read(r + 1, 1, 1, cache.cols - 2) if c is None else cache.read(r + 1, 1, c + 1, 1)


def _write(cache, r, c, value):
    """Writes value to the block at (r, c) (c None: to whole rows, with the zero border)."""
    if c is None:
        cache.put(r + 1, 0, tf.pad(value, [[0, 0], [0, 0], [1, 1], [0, 0]]))
    else:
        cache.put(r + 1, c + 1, value)


class _FastSampler:
    """Cached generation (Ramachandran et al. 2017, "Fast Generation for Convolutional
    Autoregressive Models"): every activation map of the network is kept in a cache and
    each new pixel computes only what it changes and the output needs.

    - The u stream at image row i sees only rows above i, so each image row first computes
      one row of every u layer (full width).
    - The ul stream at (i, j) sees (i, < j): each pixel computes one position of every ul
      layer from its 2x2 window, whose other cells are final from earlier steps.
    - Level L (size H / 2^L) changes only when i (and for ul, j) is a multiple of 2^L; the
      transposed convolutions then write their 2-row (u) or 2x2 (ul) block of the finer level.

    Each cache (_Cache) holds an (H + 1) x (W + 2) map with a zero border (one row above,
    a column each side) that is the padding of the shifted convolutions: position (r, c)
    of the image is the map's (r + 1, c + 1). The outputs equal the full network's (model(x)
    on the partly generated x) up to float round-off.

    One sampler serves one model, image shape and conditioning, and any batch size: the
    caches' batch dimension is set at each start, and each step is traced once. `draw`
    runs the rows from Python (progress between them); `run` is the whole image in one
    graph (for a SavedModel). jit_compile=True compiles each row's pixel loop with XLA
    (_pixel_loop): about 1.7x faster per image at the paper's size, for a longer first call.
    """

    def __init__(self, model, image_shape, conditional, jit_compile=False):
        # a weak reference: sampler()'s cache must not keep the model alive
        self._model, self.image_shape = weakref.ref(model), tuple(image_shape)
        H, W, C = image_shape
        self.jit_compile = jit_compile
        self.caches = []

        def cache(level, channels):
            self.caches.append(_Cache(level, (H >> level) + 1, (W >> level) + 2, channels))
            return self.caches[-1]

        def c1_cache(block, level):
            return cache(level, block.conv2.V.shape[2])
        F = model.nr_filters
        self.x_pad = cache(0, C + 1)
        self.ul_in_down = cache(0, F)
        up_stages, down_stages = model.stages()
        streams = (('u', 0), ('ul', 1))
        # per stream and level, as the forward pass: the up-pass maps (entry 0 the stage's
        # input), the down-pass blocks' outputs, what the transposed convolutions write
        self.up = {s: {st.level: [cache(st.level, F) for _ in range(len(st.blocks) + 1)] for st in up_stages}
                   for s, _ in streams}
        self.down = {s: {st.level: [cache(st.level, F) for _ in st.blocks] for st in down_stages}
                     for s, _ in streams}
        self.down_in = {s: {st.level: cache(st.level, F) for st in down_stages if st.resample}
                        for s, _ in streams}
        self.c1 = {(s, up_pass, st.level): [c1_cache(pair[i], st.level) for pair in st.blocks]
                   for up_pass, stages in ((True, up_stages), (False, down_stages))
                   for s, i in streams for st in stages}  # each block's f(conv1) map
        # the weight-normalised weights, computed at each start rather than at every row
        self.w = {layer.name: [tf.Variable(w, trainable=False) for w in layer.weights_now()]
                  for layer in model.weight_norm_layers()}
        signature = _signature(model, image_shape, conditional)
        # autograph=False: the loops are explicit; autograph would only convert every lambda
        # of the trace again
        self.start = tf.function(self._start, input_signature=[tf.TensorSpec([], tf.int32)], autograph=False)
        self.row = tf.function(self._row, input_signature=[tf.TensorSpec([], tf.int32)] + signature,
                               autograph=False)
        self._pixels = {n: tf.function(functools.partial(self._pixel_loop, n), jit_compile=True, autograph=False)
                        for n in range(1, len(up_stages) + 1)} if jit_compile else {}
        self.run = tf.function(self._run, input_signature=signature, autograph=False)

    @property
    def model(self):
        return self._model()

    def variables(self):
        """The sampler's own variables: its caches and its copy of the weights."""
        return [c.var for c in self.caches] + [v for ws in self.w.values() for v in ws]

    def _conv(self, layer, window, c):
        """The layer's output at the window's position (c given: one position, computed as
        a matmul of the flattened window, which on tiny inputs is several times faster
        than a convolution) or row (c None)."""
        if c is None:
            return layer.apply(window, self.w[layer.name], 'VALID')
        W, b = self.w[layer.name]
        flat = tf.reshape(window, [-1, np.prod(W.shape[:3])])
        return (tf.matmul(flat, tf.reshape(W, [-1, W.shape[-1]])) + b)[:, None, None, :]

    def _block(self, block, x_cache, c1_cache, out_cache, r, c, aux):
        f = block.nonlinearity
        c1 = self._conv(block.conv1, f(_window(x_cache, r, c)), c)
        if aux is not None:
            c1 += block.nin_aux.apply(f(aux), self.w[block.nin_aux.name])
        _write(c1_cache, r, c, f(c1))
        c2 = self._conv(block.conv2, _window(c1_cache, r, c), c)
        if self.h_terms:
            c2 += self.h_terms[block.hw_name]
        a, b = tf.split(c2, 2, axis=3)
        _write(out_cache, r, c, _center(x_cache, r, c) + a * tf.sigmoid(b))

    def _up(self, s, st, r, c):
        """Up stage st of stream s at position (r, c) of its level (c None: row r)."""
        m, i, L = self.model, 0 if s == 'u' else 1, st.level
        up = self.up[s][L]
        if st.resample is not None:
            window = _window(self.up[s][L - 1][-1], r, c, stride=2)
            _write(up[0], r, c, self._conv(st.resample[i], window, c))
        elif s == 'u':  # down_shift(down_shifted_conv2d(x_pad)): row r is the conv's row r - 1
            out = self._conv(m.u_in, self.x_pad.read(tf.maximum(r - 1, 0), 2), None)
            _write(up[0], r, None, out * tf.cast(r > 0, tf.float32))
            down = self._conv(m.ul_in_down, self.x_pad.read(r, 1), None)  # its row r - 1 as well
            _write(self.ul_in_down, r, None, down * tf.cast(r > 0, tf.float32))
        else:  # + right_shift(down_right_shifted_conv2d(x_pad)): column c is the conv's c - 1
            right = self._conv(m.ul_in_right, self.x_pad.read(r, 2, c, 1), c)
            _write(up[0], r, c, _center(self.ul_in_down, r, c) + right * tf.cast(c > 0, tf.float32))
        for k, pair in enumerate(st.blocks, start=1):
            aux = None if s == 'u' else _center(self.up['u'][L][k], r, c)
            self._block(pair[i], up[k - 1], self.c1[s, True, L][k - 1], up[k], r, c, aux)

    def _down(self, s, st, r, c, into):
        """Down stage st of stream s at position (r, c) of its level; `into`, the next
        stage's transposed convolutions, also writes their block of the level below."""
        i, L = 0 if s == 'u' else 1, st.level
        prev = self.up[s][L][st.start] if st.resample is None else self.down_in[s][L]
        for b, (pair, k) in enumerate(zip(st.blocks, st.shortcuts)):
            if s == 'u':
                aux = _center(self.up['u'][L][k], r, c)
            else:
                aux = tf.concat([_center(self.down['u'][L][b], r, c), _center(self.up['ul'][L][k], r, c)], 3)
            self._block(pair[i], prev, self.c1[s, False, L][b], self.down[s][L][b], r, c, aux)
            prev = self.down[s][L][b]
        if into is not None:
            layer = into.resample[i]
            out = layer.apply(_center(prev, r, c), self.w[layer.name])
            width = self.image_shape[1] // 2 ** L if c is None else 1
            out = out[:, :2, layer.crop[0]:layer.crop[0] + 2 * width]
            _write(self.down_in[s][into.level], 2 * r, None if c is None else 2 * c, out)

    def _levels(self, s, i, j, levels=None):
        """What stream s updates at image row i (and column j for ul), stage by stage in the
        forward pass's order: a stage at level L runs where i (and j) are multiples of 2^L.
        `levels`: the levels that run here, known when tracing; None: decided in the graph."""
        def run(st, fn):
            L = st.level
            at = (i // 2 ** L, None if j is None else j // 2 ** L)
            if levels is not None:
                if L in levels:
                    fn(*at)
            elif L == 0:
                fn(*at)
            else:
                tf.cond(tf.logical_and(i % 2 ** L == 0, True if j is None else j % 2 ** L == 0),
                        lambda: fn(*at) or tf.constant(0), lambda: tf.constant(0))

        up_stages, down_stages = self.model.stages()
        for st in up_stages:
            run(st, lambda r, c, st=st: self._up(s, st, r, c))
        for st, into in zip(down_stages, down_stages[1:] + (None,)):
            run(st, lambda r, c, st=st, into=into: self._down(s, st, r, c, into))

    def _start(self, batch_size):
        """Empty caches for a batch of this size, and the model's weights as they are now."""
        for layer in self.model.weight_norm_layers():
            for var, value in zip(self.w[layer.name], layer.weights_now()):
                var.assign(value)
        C = self.image_shape[2]
        for cache in self.caches:
            cache.var.assign(tf.zeros(tf.stack([cache.var.shape[0], batch_size, cache.channels])))
        inside = np.zeros((self.x_pad.rows + 1, self.x_pad.cols, 1, 1), np.float32)
        inside[1:-1, 1:-1] = 1.  # x_pad's last channel: 1 on the image, 0 on its border
        self.x_pad.var[:, :, C:].assign(tf.broadcast_to(inside.reshape(-1, 1, 1),
                                                         tf.stack([inside.size, batch_size, 1])))

    def _set_h(self, h):
        """The conditioning terms of every block (fixed for the whole image)."""
        m = self.model
        blocks = [b for st in sum(m.stages(), ()) for pair in st.blocks for b in pair]
        self.h_terms = {} if h is None else {b.hw_name: tf.matmul(h, b.hw)[:, None, None, :] for b in blocks}

    def _row(self, i, u_mix, u_logistic, given, given_rows, temperature, h=None):
        """Image row i: each pixel drawn with the noise of noise(), or given's where i <
        given_rows, and written to the caches. First the u stream's row, then the pixels:
        with jit_compile, in one loop compiled by XLA (_pixel_loop); without, in a
        tf.while_loop over the columns."""
        self._set_h(h)
        self._levels('u', i, None)
        args = (u_mix[:, i], u_logistic[:, i], given[:, i], given_rows, temperature)
        if self.jit_compile:
            # the levels that run at row i: 1, 2 or 3 (where i is a multiple of 2^level)
            levels = len(self.model.stages()[0])
            n = sum(tf.cast(i % 2 ** L == 0, tf.int32) for L in range(levels))

            def branch(n):
                def run():
                    slabs = [cache.load_slab(i) for cache in self.caches]
                    written = self._pixels[n](i, slabs, *args, h=h)
                    for k, slab in written.items():
                        self.caches[int(k)].store_slab(i, slab)
                    return tf.constant(0)
                return run
            tf.switch_case(n - 1, [branch(n) for n in range(1, levels + 1)])
        else:
            def body(j):
                self._levels('ul', i, j)
                self._pixel(i, j, *args)
                return j + 1
            tf.while_loop(lambda j: j < self.image_shape[1], body, [tf.constant(0)])

    def _output(self, i, j):
        """The network's output at pixel (i, j): the mixture parameters l, (B, 1, 1, P)."""
        m = self.model
        ul = _center(self.down['ul'][0][-1], i, j)
        return m.head[0].apply(tf.nn.elu(ul), self.w[m.head[0].name])

    def _put_pixel(self, i, j, pixel):
        """Writes pixel (B, 1, 1, C), scaled to [-1, 1], at (i, j) of x_pad."""
        _write(self.x_pad, i, j, tf.concat([pixel, tf.ones_like(pixel[..., :1])], 3))

    def _pixel(self, i, j, u_mix, u_logistic, given, given_rows, temperature):
        """Pixel (i, j) from the network's output there (u_mix, u_logistic, given: row i),
        written to x_pad. (The codec's sampler replaces the draw with its entropy coder.)"""
        def column(x):
            return tf.gather(x, j, axis=1)[:, None, None]
        pixel = nn.sample_with_noise(self._output(i, j), self.image_shape[2],
                                     (column(u_mix), column(u_logistic)), temperature)
        self._put_pixel(i, j, tf.where(i < given_rows, column(given), pixel))

    def _pixel_loop(self, n, i, slabs, *args, h=None):
        """The pixels of image row i, where levels 0 .. n - 1 run, on the caches' slabs
        (compiled by XLA, which takes neither the variables' sparse reads and writes nor,
        without copying the slabs, conditions). Level L runs at the columns that are
        multiples of 2^L: the loop steps over groups of 2^(n - 1) columns, each with its
        schedule written out. Returns the slabs it wrote, by cache index."""
        group = 2 ** (n - 1)
        self._set_h(h)

        def body(g, slabs):
            for cache, slab in zip(self.caches, slabs):
                cache.use_slab(i, slab)
            for t in range(group):
                j = g * group + t
                self._levels('ul', i, j, [L for L in range(n) if t % 2 ** L == 0])
                self._pixel(i, j, *args)
            return g + 1, [cache.slab for cache in self.caches]

        for cache in self.caches:
            cache.written = False
        slabs = tf.while_loop(lambda g, slabs: g < self.image_shape[1] // group, body, (tf.constant(0), slabs))[1]
        written = {str(k): slab for k, (cache, slab) in enumerate(zip(self.caches, slabs)) if cache.written}
        for cache in self.caches:
            cache.use_slab(i, None)
        return written

    def _result(self):
        H, W, C = self.image_shape
        return self.x_pad.read(1, H, 1, W)[..., :C]

    def _run(self, u_mix, u_logistic, given, given_rows, temperature, h=None):
        self._start(tf.shape(u_logistic)[0])
        def body(i):
            self._row(i, u_mix, u_logistic, given, given_rows, temperature, h)
            return i + 1
        tf.while_loop(lambda i: i < self.image_shape[0], body, [tf.constant(0)])
        return self._result()

    def draw(self, u_mix, u_logistic, given, given_rows, temperature, h=(), progress=None):
        self.start(tf.shape(u_logistic)[0])
        for i in range(self.image_shape[0]):
            self.row(i, u_mix, u_logistic, given, given_rows, temperature, *h)
            if progress:
                progress(i + 1)
        return self._result()


# One sampler per model, method, image shape, conditioning and compilation, reused by every call.
_samplers = weakref.WeakKeyDictionary()
METHODS = ('fast', 'naive')


def sampler(model, image_shape, conditional, method='fast', jit_compile=False):
    """The model's sampler for this image shape, conditioning and method, made once: later
    calls with any batch size reuse its compiled steps."""
    samplers = _samplers.setdefault(model, {})
    key = (method, tuple(image_shape), conditional, jit_compile)
    if key not in samplers:
        samplers[key] = _FastSampler(model, image_shape, conditional, jit_compile) if method == 'fast' \
            else _NaiveSampler(model, image_shape, conditional)
    return samplers[key]


def sample(model, num, h=None, seed=None, method='fast', image_shape=None, given=None,
           given_rows=0, temperature=1., jit_compile=False, progress=None):
    """`num` images (uint8 NHWC) from a built PixelCNNPP.

    h: (num, K) conditioning for a conditional model. seed: reproducible samples (the same
    seed draws the same images with either method). image_shape (H, W, C): defaults to
    model.image_shape. given (uint8 (num, H, W, C)) and given_rows = r: completion, the
    first r rows are given's and the others drawn from p(x | those rows). temperature T:
    mixture logits / T and logistic scales x T (1: the model's distribution; lower: sharper
    images of lower bits/dim if the logistics are narrower than the pixel range, as a trained
    model's are; no longer samples of the model). jit_compile=True (fast only):
    the per-pixel loop compiled by XLA, faster per batch once compiled (the first call of
    a model, shape and conditioning compiles it, about a minute at the paper's size).
    progress(rows_done) is called after each image row."""
    if method not in METHODS:
        raise ValueError('method must be one of %s, got %r' % (sorted(METHODS), method))
    if not model.built or model.channels is None:
        raise ValueError('the model is not built yet: call it once on a batch or load weights first')
    if jit_compile and method != 'fast':
        raise ValueError("jit_compile=True compiles the fast sampler: use method='fast'")
    if method == 'fast' and model.energy_distance:
        raise ValueError("method='fast' needs a mixture model; the energy-distance head "
                         "draws fresh noise each pass: use method='naive'")
    if not temperature > 0:
        raise ValueError('temperature must be > 0, got %r' % temperature)
    image_shape = tuple(image_shape or model.image_shape)
    shape = (num,) + image_shape
    if h is not None:
        h = tf.convert_to_tensor(h, tf.float32)
        if h.shape[0] != num:
            raise ValueError('h has %d rows but num is %d' % (h.shape[0], num))
    if given is None:
        if given_rows:
            raise ValueError('given_rows=%d needs the given images' % given_rows)
        given = tf.zeros(shape)
    else:
        given = np.asarray(given)
        if given.dtype != np.uint8 or given.shape != shape:
            raise ValueError('given must be uint8 images of shape %s, got %s %s' % (shape, given.dtype, given.shape))
        if not 0 <= given_rows <= image_shape[0]:
            raise ValueError('given_rows must be in [0, %d], got %d' % (image_shape[0], given_rows))
        given = images.scale(given)
    seed = tf.constant(seed, tf.int64) if seed is not None else None
    u_mix, u_logistic = noise(shape, model.nr_logistic_mix, seed)
    x = sampler(model, image_shape, h is not None, method, jit_compile).draw(
        u_mix, u_logistic, given, given_rows, float(temperature), () if h is None else (h,), progress)
    return images.to_uint8(x).numpy()
