"""The fast sampler: cached generation, each new pixel computing only what it changes in the
network's maps (the caches: cache.py) and what the output needs, level by level."""

import functools
import weakref

import tensorflow as tf

from pixel_cnn_pp import nn
from pixel_cnn_pp.sampling.inputs import row_signature
from pixel_cnn_pp.sampling.step import CachedNetwork


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

    The caches and what each op computes there are step.CachedNetwork's, in the model's
    plan; this class schedules them over rows and pixels. The outputs equal the full
    network's (model(x) on the partly generated x) up to float round-off.

    One sampler serves one model, image shape and conditioning, and any batch size: the
    caches' batch dimension is set at each start, and each step is traced once. `draw`
    runs the rows from Python (progress between them); `run` is the whole image in one
    graph (for a SavedModel). jit_compile=True compiles each row's pixel loop with XLA
    (_pixel_loop): about 1.7x faster per image at the paper's size, for a longer first call.
    """

    def __init__(self, model, image_shape, conditional, jit_compile=False):
        # a weak reference: the model's memo must not keep it alive
        self._model, self.image_shape = weakref.ref(model), tuple(image_shape)
        self.jit_compile = jit_compile
        self.net = CachedNetwork(model, image_shape)
        self.levels = 1 + max(op.level for op in self.net.ops)
        signature = row_signature(model, image_shape, conditional)
        # autograph=False: the loops are explicit; autograph would only convert every lambda
        # of the trace again
        self.start = tf.function(self.net.start, input_signature=[tf.TensorSpec([], tf.int32)], autograph=False)
        self.row = tf.function(self._row, input_signature=[tf.TensorSpec([], tf.int32)] + signature,
                               autograph=False)
        self._pixels = {n: tf.function(functools.partial(self._pixel_loop, n), jit_compile=True, autograph=False)
                        for n in range(1, self.levels + 1)} if jit_compile else {}
        self.run = tf.function(self._run, input_signature=signature, autograph=False)

    @property
    def model(self):
        return self._model()

    def variables(self):
        """The sampler's own variables: its caches and its copy of the weights."""
        return [c.var for c in self.net.caches] + [v for ws in self.net.w.values() for v in ws]

    def _stream(self, stream, i, j, levels=None):
        """What `stream` computes at image row i (u) or pixel (i, j) (ul), op by op in the
        plan's order: an op of level L runs where i (and j) are multiples of 2^L, at (i, j)
        // 2^L. `levels`: the levels that run here, known when tracing; None: decided in the
        graph."""
        def run(fn, L):
            if levels is not None:
                if L in levels:
                    fn()
            elif L == 0:
                fn()
            else:
                tf.cond(tf.logical_and(i % 2 ** L == 0, True if j is None else j % 2 ** L == 0),
                        lambda: fn() or tf.constant(0), lambda: tf.constant(0))

        net = self.net
        run(lambda: net.inputs(self.model, stream, i, j), 0)
        for op in net.ops:
            if op.stream == stream:
                run(lambda op=op: net.run(op, i // 2 ** op.level, None if j is None else j // 2 ** op.level,
                                          self.h_terms), op.level)

    def _set_h(self, h):
        """The conditioning terms of every block (fixed for the whole image)."""
        self.h_terms = {} if h is None else {op.layer.hw_name: op.layer.h_term(h) for op in self.net.ops
                                             if isinstance(op.layer, nn.GatedResnet)}

    def _row(self, i, u_mix, u_logistic, given, given_rows, temperature, h=None):
        """Image row i: each pixel drawn with the noise of inputs.noise(), or given's where i <
        given_rows, and written to the caches. First the u stream's row, then the pixels:
        with jit_compile, in one loop compiled by XLA (_pixel_loop); without, in a
        tf.while_loop over the columns."""
        self._set_h(h)
        self._stream('u', i, None)
        args = (u_mix[:, i], u_logistic[:, i], given[:, i], given_rows, temperature)
        if self.jit_compile:
            # the levels that run at row i: 1, 2 or 3 (where i is a multiple of 2^level)
            n = sum(tf.cast(i % 2 ** L == 0, tf.int32) for L in range(self.levels))
            caches = self.net.caches

            def branch(n):
                def run():
                    slabs = [cache.load_slab(i) for cache in caches]
                    written = self._pixels[n](i, slabs, *args, h=h)
                    for k, slab in written.items():
                        caches[int(k)].store_slab(i, slab)
                    return tf.constant(0)
                return run
            tf.switch_case(n - 1, [branch(n) for n in range(1, self.levels + 1)])
        else:
            def body(j):
                self._stream('ul', i, j)
                self._pixel(i, j, *args)
                return j + 1
            tf.while_loop(lambda j: j < self.image_shape[1], body, [tf.constant(0)])

    def _pixel(self, i, j, u_mix, u_logistic, given, given_rows, temperature):
        """Pixel (i, j) from the network's output there (u_mix, u_logistic, given: row i),
        written to x_pad. (The codec's sampler replaces the draw with its entropy coder.)"""
        def column(x):
            return tf.gather(x, j, axis=1)[:, None, None]
        pixel = nn.sample_with_noise(self.net.head(self.model, i, j), self.image_shape[2],
                                     (column(u_mix), column(u_logistic)), temperature)
        self.net.put_pixel(i, j, tf.where(i < given_rows, column(given), pixel))

    def _pixel_loop(self, n, i, slabs, *args, h=None):
        """The pixels of image row i, where levels 0 .. n - 1 run, on the caches' slabs
        (compiled by XLA, which takes neither the variables' sparse reads and writes nor,
        without copying the slabs, conditions). Level L runs at the columns that are
        multiples of 2^L: the loop steps over groups of 2^(n - 1) columns, each with its
        schedule written out. Returns the slabs it wrote, by cache index."""
        group = 2 ** (n - 1)
        caches = self.net.caches
        self._set_h(h)

        def body(g, slabs):
            for cache, slab in zip(caches, slabs):
                cache.use_slab(i, slab)
            for t in range(group):
                j = g * group + t
                self._stream('ul', i, j, [L for L in range(n) if t % 2 ** L == 0])
                self._pixel(i, j, *args)
            return g + 1, [cache.slab for cache in caches]

        for cache in caches:
            cache.written = False
        slabs = tf.while_loop(lambda g, slabs: g < self.image_shape[1] // group, body, (tf.constant(0), slabs))[1]
        written = {str(k): slab for k, (cache, slab) in enumerate(zip(caches, slabs)) if cache.written}
        for cache in caches:
            cache.use_slab(i, None)
        return written

    def _run(self, u_mix, u_logistic, given, given_rows, temperature, h=None):
        self.net.start(tf.shape(u_logistic)[0])
        def body(i):
            self._row(i, u_mix, u_logistic, given, given_rows, temperature, h)
            return i + 1
        tf.while_loop(lambda i: i < self.image_shape[0], body, [tf.constant(0)])
        return self.net.result()

    def draw(self, u_mix, u_logistic, given, given_rows, temperature, h=(), progress=None):
        self.start(tf.shape(u_logistic)[0])
        for i in range(self.image_shape[0]):
            self.row(i, u_mix, u_logistic, given, given_rows, temperature, *h)
            if progress:
                progress(i + 1)
        return self.net.result()
