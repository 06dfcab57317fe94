"""The fast sampler: cached generation, each new pixel computing only what it changes in the
network's maps (the caches: cache.py) and what the output needs, level by level."""

import contextlib
import functools
import itertools
import weakref

import tensorflow as tf

from pixel_cnn_pp import nn
from pixel_cnn_pp.sampling.coding import CodingPass
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
    (_pixel_loop), faster per image for a longer first call. The codec runs the same
    traced row with a coder in place of the draw (code()).
    """

    def __init__(self, model, image_shape, conditional, jit_compile=False):
        # a weak reference: the model's memo must not keep it alive
        self._model, self.image_shape = weakref.ref(model), tuple(image_shape)
        self.jit_compile = jit_compile
        self.net = CachedNetwork(model, image_shape)
        self.levels = 1 + max(op.level for op in self.net.ops)
        self.groups = {s: [(L, list(ops)) for L, ops in itertools.groupby(
            [op for op in self.net.ops if op.stream == s], lambda op: op.level)] for s in ('u', 'ul')}
        self.coding = CodingPass(self)  # the codec's pass, on this sampler's row
        signature = row_signature(model, image_shape, conditional)
        # autograph=False: the loops are explicit; autograph would only convert every lambda
        # of the trace again
        self.start = tf.function(lambda batch_size: self.net.start(self.model, batch_size),
                                 input_signature=[tf.TensorSpec([], tf.int32)], autograph=False)
        self.row = tf.function(self._row, input_signature=[tf.TensorSpec([], tf.int32)] + signature,
                               autograph=False)
        self._pixels = {n: tf.function(functools.partial(self._pixel_loop, n), jit_compile=True, autograph=False)
                        for n in range(1, self.levels + 1)} if jit_compile else {}
        self.run = tf.function(self._run, input_signature=signature, autograph=False)

    @property
    def model(self):
        return self._model()

    def variables(self):
        """The sampler's own variables: its caches, rows and copy of the weights."""
        return [c.var for c in self.net.caches] + [r.var for r in self.net.rows + [self.net.l_row]] + \
            list(self.net.w.values()) + [self.coding.on]

    @staticmethod
    def _when(L, i, j, fn, levels=None):
        """fn() where level L runs: at rows i (and columns j) that are multiples of 2^L.
        `levels`: the levels that run here, known when tracing; None: decided in the graph."""
        if levels is not None:
            if L in levels:
                fn()
        elif L == 0:
            fn()
        else:
            at = i % 2 ** L == 0 if j is None else tf.logical_and(i % 2 ** L == 0, j % 2 ** L == 0)
            tf.cond(at, lambda: (fn(), tf.constant(0))[1], lambda: tf.constant(0))

    @staticmethod
    def _each(ops, fn, *args):
        """fn(op, *args) for each op, its arguments (a level's row or column) made once."""
        for op in ops:
            fn(op, *args)

    def _set_h(self, h):
        """The conditioning terms of every block (fixed for the whole image)."""
        self.h_terms = {} if h is None else {op.layer.hw_name: op.layer.h_term(h) for op in self.net.ops
                                             if isinstance(op.layer, nn.GatedResnet)}

    def _start_row(self, i):
        """Row i's u stream (whole rows), then what its ul pixels share (each op's terms of
        the row above), level by level in the plan's order."""
        net, m = self.net, self.model
        net.u_inputs(m, i)
        for L, ops in self.groups['u']:
            self._when(L, i, None, lambda L=L, ops=ops: self._each(ops, net.run_row, i // 2 ** L, self.h_terms))
        net.ul_inputs_row(m, i)
        for L in range(self.levels):
            ops = [op for op in net.ops if op.p1 is not None and op.level == L]
            self._when(L, i, None, lambda L=L, ops=ops: self._each(ops, net.ul_row, i // 2 ** L, self.h_terms))

    def _ul_step(self, i, j, levels=None):
        """Pixel (i, j)'s ul stream, op by op in the plan's order at the levels that run (known
        when tracing in XLA's loop, on slabs: `levels`). Returns the positions and the values
        computed at them (CachedNetwork.ul_step)."""
        net, fresh = self.net, {}
        pos = net.positions(i, j, self.levels, slab=levels is not None)
        net.ul_inputs(self.model, j, pos, fresh)
        for L, ops in self.groups['ul']:
            def run(L=L, ops=ops):
                # a condition's branch keeps what it computes to itself
                self._each(ops, net.ul_step, j // 2 ** L, pos, fresh if L == 0 or levels is not None else dict(fresh))
            self._when(L, i, j, run, levels)
        return pos, fresh

    def _row(self, i, u_mix, u_logistic, given, given_rows, temperature, h=None, coder=True):
        """Image row i: each pixel drawn with the noise of inputs.noise(), or given's where i <
        given_rows, and written to the caches. First the row's shared terms, then the pixels:
        with jit_compile, in one loop compiled by XLA (_pixel_loop); without, in a
        tf.while_loop over the columns."""
        self._set_h(h)
        self._start_row(i)
        args = (u_mix[:, i], u_logistic[:, i], given[:, i], given_rows, temperature)
        if self.jit_compile:
            # the levels that run at row i: 1, 2 or 3 (where i is a multiple of 2^level)
            n = sum(tf.cast(i % 2 ** L == 0, tf.int32) for L in range(self.levels))
            caches = [c for c in self.net.caches if c.stream != 'u']

            def branch(n):
                def run():
                    slabs = [cache.load_slab(i // 2 ** cache.level) for cache in caches]
                    written = self._pixels[n](i, slabs, [r.var.read_value() for r in self.net.rows], *args)
                    for k, slab in written.items():
                        caches[int(k)].store_slab(i // 2 ** caches[int(k)].level, slab)
                    return tf.constant(0)
                return run
            tf.switch_case(n - 1, [branch(n) for n in range(1, self.levels + 1)])
        else:
            def body(j):
                self._pixel(i, j, *self._ul_step(i, j), *args, coder=coder)
                return j + 1
            tf.while_loop(lambda j: j < self.image_shape[1], body, [tf.constant(0)])

    def _pixel(self, i, j, pos, fresh, u_mix, u_logistic, given, given_rows, temperature, coder=True):
        """Pixel (i, j) from the network's output there (u_mix, u_logistic, given: row i),
        written to x_pad: drawn, or while coding the coder's (CodingPass)."""
        def column(x):
            return tf.gather(x, j, axis=1)[:, None, None]
        l = self.net.head(self.model, pos, fresh)
        pixel = nn.sample_with_noise(l[:, None, None], self.image_shape[2],
                                     (column(u_mix), column(u_logistic)), temperature)[:, 0, 0]
        pixel = tf.where(i < given_rows, column(given)[:, 0, 0], pixel)
        if coder:
            self.net.l_row.put_cell(j, l)
            pixel = self.coding.pixel(i, j, l, pixel)
        self.net.put_pixel(pos, pixel)

    def _pixel_loop(self, n, i, slabs, rows, *args):
        """The pixels of image row i, where levels 0 .. n - 1 run, on the ul caches' slabs
        and the row's shared terms (compiled by XLA, which takes neither the variables'
        sparse reads and writes nor, without copying the slabs, conditions). Level L runs at
        the columns that are multiples of 2^L: the loop steps over groups of 2^(n - 1)
        columns, each with its schedule written out. Returns the slabs it wrote, by index."""
        group = 2 ** (n - 1)
        caches = [c for c in self.net.caches if c.stream != 'u']
        for row, value in zip(self.net.rows, rows):
            row.value = value

        def body(g, slabs):
            for cache, slab in zip(caches, slabs):
                cache.slab = slab
            for t in range(group):
                j = g * group + t
                self._pixel(i, j, *self._ul_step(i, j, [L for L in range(n) if t % 2 ** L == 0]), *args, coder=False)
            return g + 1, [cache.slab for cache in caches]

        for cache in caches:
            cache.written = False
        slabs = tf.while_loop(lambda g, slabs: g < self.image_shape[1] // group, body, (tf.constant(0), slabs))[1]
        written = {str(k): slab for k, (cache, slab) in enumerate(zip(caches, slabs)) if cache.written}
        for cache in caches:
            cache.slab = None
        for row in self.net.rows:
            row.value = None
        return written

    def _run(self, u_mix, u_logistic, given, given_rows, temperature, h=None):
        self.net.start(self.model, tf.shape(u_logistic)[0])
        def body(i):
            self._row(i, u_mix, u_logistic, given, given_rows, temperature, h, coder=False)
            return i + 1
        tf.while_loop(lambda i: i < self.image_shape[0], body, [tf.constant(0)])
        return self.net.result()

    def draw(self, u_mix, u_logistic, given, given_rows, temperature, h=(), progress=None):
        with _without_grappler():
            self.start(tf.shape(u_logistic)[0])
            for i in range(self.image_shape[0]):
                self.row(i, u_mix, u_logistic, given, given_rows, temperature, *h)
                if progress:
                    progress(i + 1)
            return self.net.result()


@contextlib.contextmanager
def _without_grappler():
    """The sampler's functions made and run without TensorFlow's graph optimizer: its
    rewrites take 2 s of the first call at the paper size and gain nothing per row, and
    without them the codec's floats do not depend on the process's optimizer settings."""
    before = tf.config.optimizer.get_experimental_options().get('disable_meta_optimizer', False)
    tf.config.optimizer.set_experimental_options({'disable_meta_optimizer': True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({'disable_meta_optimizer': before})
