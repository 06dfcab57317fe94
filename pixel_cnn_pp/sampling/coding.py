"""The codec's pass through the fast sampler: the network's output at each pixel handed to an
entropy coder, on the sampler's own traced row."""

import concurrent.futures

import numpy as np
import tensorflow as tf

from pixel_cnn_pp.images import scale


class CodingPass:
    """A FastSampler's coding pass (codec.py's encoder and decoder): coder(i, j, l) is given
    the network's output l (B, P) at each pixel (i, j).

    Decoding, it returns the pixel (uint8 (B, C)) to write there, decoded from the stream:
    the row's loop calls it through a tf.numpy_function in place of the draw (pixel(),
    behind a condition on the variable `on`, so that sampling and coding share one trace).
    Encoding, the pixels are known: the pass writes them as a completion's given rows and
    codes each finished row in a thread while the next row computes (the row's outputs kept
    in the sampler's l_row), with the same per-pixel calls as the decoder's."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.on = tf.Variable(False, trainable=False)
        self.coder = self.error = None

    def pixel(self, i, j, l, drawn):
        """The pixel to write at (i, j): the coder's while `on`, else `drawn`."""
        C = self.sampler.image_shape[2]
        return tf.cond(self.on, lambda: scale(tf.ensure_shape(tf.numpy_function(
            self._call, [i, j, l], tf.uint8, stateful=True), [None, C])), lambda: drawn)

    def _call(self, i, j, l):
        # its first exception stops the pass (run(), after the row)
        if self.error is None:
            try:
                return np.asarray(self.coder(int(i), int(j), l), np.uint8)
            except Exception as e:  # noqa: BLE001 - re-raised by run() after the row
                self.error = e
        return np.zeros((len(l), self.sampler.image_shape[2]), np.uint8)

    def run(self, batch_size, h, coder, progress=None, known=None):
        """One pass over a batch: decoding (known None), or encoding the known pixels (B, H,
        W, C, scaled). progress(rows done) after each row."""
        s = self.sampler
        H, W, C = s.image_shape
        # the noise of the draw the coder replaces, unused
        u_mix, u_logistic = tf.fill((batch_size, H, W, s.model.nr_logistic_mix), .5), tf.fill((batch_size, H, W, C), .5)
        h = () if h is None else (h,)
        if known is not None:
            with concurrent.futures.ThreadPoolExecutor(1) as worker:
                rows = []

                def after_row(done):
                    l = s.net.l_row.var.numpy()
                    rows.append(worker.submit(lambda i=done - 1, l=l: [coder(i, j, l[j]) for j in range(W)]))
                    if progress:
                        progress(done)
                s.draw(u_mix, u_logistic, known, H, 1., h, after_row)
                for row in rows:
                    row.result()
            return
        self.coder, self.error = coder, None

        def after_row(done):
            if self.error is not None:
                raise self.error
            if progress:
                progress(done)
        self.on.assign(True)
        try:
            s.draw(u_mix, u_logistic, tf.zeros((batch_size, H, W, C)), 0, 1., h, after_row)
        finally:
            self.on.assign(False)
            self.coder = None
