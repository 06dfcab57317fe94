"""The fast sampler: cached generation, each new pixel computing only what it changes in the
network's maps (the caches: cache.py) and what the output needs, level by level."""

import functools
import weakref

import numpy as np
import tensorflow as tf

from pixel_cnn_pp import nn
from pixel_cnn_pp.sampling.cache import Cache, read_center, read_window, write_block
from pixel_cnn_pp.sampling.inputs import row_signature


class FastSampler:
    """Cached generation (Ramachandran et al. 2017, "Fast Generation for Convolutional
    Autoregressive Models"): every activation map of the network is kept in a cache and
    each new pixel computes only what it changes and the output needs.

    - The u stream at image row i sees only rows above i, so each image row first computes
      one row of every u layer (full width).
    - The ul stream at (i, j) sees (i, < j): each pixel computes one position of every ul
      layer from its 2x2 window, whose other cells are final from earlier steps.
    - Level L (size H / 2^L) changes only when i (and for ul, j) is a multiple of 2^L; the
      transposed convolutions then write their 2-row (u) or 2x2 (ul) block of the finer level.

    Each cache (Cache) holds an (H + 1) x (W + 2) map with a zero border (one row above,
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
            self.caches.append(Cache(level, (H >> level) + 1, (W >> level) + 2, channels))
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
        signature = row_signature(model, image_shape, conditional)
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
        c1 = self._conv(block.conv1, f(read_window(x_cache, r, c)), c)
        if aux is not None:
            c1 += block.nin_aux.apply(f(aux), self.w[block.nin_aux.name])
        write_block(c1_cache, r, c, f(c1))
        c2 = self._conv(block.conv2, read_window(c1_cache, r, c), c)
        if self.h_terms:
            c2 += self.h_terms[block.hw_name]
        a, b = tf.split(c2, 2, axis=3)
        write_block(out_cache, r, c, read_center(x_cache, r, c) + a * tf.sigmoid(b))

    def _up(self, s, st, r, c):
        """Up stage st of stream s at position (r, c) of its level (c None: row r)."""
        m, i, L = self.model, 0 if s == 'u' else 1, st.level
        up = self.up[s][L]
        if st.resample is not None:
            window = read_window(self.up[s][L - 1][-1], r, c, stride=2)
            write_block(up[0], r, c, self._conv(st.resample[i], window, c))
        elif s == 'u':  # down_shift(down_shifted_conv2d(x_pad)): row r is the conv's row r - 1
            out = self._conv(m.u_in, self.x_pad.read(tf.maximum(r - 1, 0), 2), None)
            write_block(up[0], r, None, out * tf.cast(r > 0, tf.float32))
            down = self._conv(m.ul_in_down, self.x_pad.read(r, 1), None)  # its row r - 1 as well
            write_block(self.ul_in_down, r, None, down * tf.cast(r > 0, tf.float32))
        else:  # + right_shift(down_right_shifted_conv2d(x_pad)): column c is the conv's c - 1
            right = self._conv(m.ul_in_right, self.x_pad.read(r, 2, c, 1), c)
            write_block(up[0], r, c, read_center(self.ul_in_down, r, c) + right * tf.cast(c > 0, tf.float32))
        for k, pair in enumerate(st.blocks, start=1):
            aux = None if s == 'u' else read_center(self.up['u'][L][k], r, c)
            self._block(pair[i], up[k - 1], self.c1[s, True, L][k - 1], up[k], r, c, aux)

    def _down(self, s, st, r, c, into):
        """Down stage st of stream s at position (r, c) of its level; `into`, the next
        stage's transposed convolutions, also writes their block of the level below."""
        i, L = 0 if s == 'u' else 1, st.level
        prev = self.up[s][L][st.start] if st.resample is None else self.down_in[s][L]
        for b, (pair, k) in enumerate(zip(st.blocks, st.shortcuts)):
            if s == 'u':
                aux = read_center(self.up['u'][L][k], r, c)
            else:
                aux = tf.concat([read_center(self.down['u'][L][b], r, c), read_center(self.up['ul'][L][k], r, c)], 3)
            self._block(pair[i], prev, self.c1[s, False, L][b], self.down[s][L][b], r, c, aux)
            prev = self.down[s][L][b]
        if into is not None:
            layer = into.resample[i]
            out = layer.apply(read_center(prev, r, c), self.w[layer.name])
            width = self.image_shape[1] // 2 ** L if c is None else 1
            out = out[:, :2, layer.crop[0]:layer.crop[0] + 2 * width]
            write_block(self.down_in[s][into.level], 2 * r, None if c is None else 2 * c, out)

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
        """Image row i: each pixel drawn with the noise of inputs.noise(), or given's where i <
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
        ul = read_center(self.down['ul'][0][-1], i, j)
        return m.head[0].apply(tf.nn.elu(ul), self.w[m.head[0].name])

    def _put_pixel(self, i, j, pixel):
        """Writes pixel (B, 1, 1, C), scaled to [-1, 1], at (i, j) of x_pad."""
        write_block(self.x_pad, i, j, tf.concat([pixel, tf.ones_like(pixel[..., :1])], 3))

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
