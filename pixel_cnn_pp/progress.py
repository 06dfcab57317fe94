"""Progress bars that suit where the output goes: Keras' bar on a terminal, plain lines in a
file or a pipe (Keras' bar redraws itself with carriage returns and colour codes whenever
`posix` is loaded, which in a log file makes one line of thousands of characters)."""

import sys
import time

import keras


class PlainProgbar:
    """keras.utils.Progbar's update/add, printed as one plain line every `percent` percent
    of the target or every `interval` seconds, whichever comes first, and at the end:
    `  300/3125 (10%) 0:04:12, ETA 0:37:48 - bits_per_dim: 3.1234`. Metrics named in
    stateful_metrics are shown as given, the others averaged over the steps so far."""

    def __init__(self, target, stateful_metrics=None, unit_name='step', percent=10, interval=300.,
                 file=None):
        self.target, self.unit_name = target, unit_name
        self.stateful = set(stateful_metrics or ())
        self.percent, self.interval = percent, interval
        self.file = file
        self.start = self.last_print = time.time()
        self.seen, self.last_mark = 0, 0
        self.values = {}  # name: [sum, count] (stateful: [value, 1])

    def update(self, current, values=None, finalize=None):
        step = max(current - self.seen, 1)
        for name, value in values or []:
            if name in self.stateful:
                self.values[name] = [value, 1]
            else:
                total, count = self.values.get(name, (0., 0))
                self.values[name] = [total + value * step, count + step]
        self.seen = current
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        now = time.time()
        mark = int(100 * current / self.target // self.percent) if self.target else 0
        if not (finalize or mark > self.last_mark or now - self.last_print >= self.interval):
            return
        self.last_mark, self.last_print = mark, now
        print(self.line(current, now), file=self.file or sys.stdout, flush=True)

    def add(self, n, values=None):
        self.update(self.seen + n, values)

    def line(self, current, now):
        elapsed = now - self.start
        if self.target:
            width = len(str(self.target))
            text = '%*d/%d %s (%d%%) %s' % (width, current, self.target, self.unit_name + 's',
                                            100 * current // self.target, _clock(elapsed))
            if 0 < current < self.target:
                text += ', ETA %s' % _clock(elapsed / current * (self.target - current))
        else:
            text = '%d %ss %s' % (current, self.unit_name, _clock(elapsed))
        for name, (total, count) in self.values.items():
            text += ' - %s: %.4f' % (name, total / count)
        return text


def _clock(seconds):
    seconds = int(seconds)
    return '%d:%02d:%02d' % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def bar(target, enabled=True, unit_name='step', stateful_metrics=None):
    """A progress bar with keras.utils.Progbar's update(current, values): Keras' own on a
    terminal, a PlainProgbar when stdout is a file or a pipe, silent when not enabled."""
    if enabled and not _interactive():
        return PlainProgbar(target, stateful_metrics=stateful_metrics, unit_name=unit_name)
    return keras.utils.Progbar(target, verbose=1 if enabled else 0, unit_name=unit_name,
                               stateful_metrics=stateful_metrics)


def _interactive():
    return hasattr(sys.stdout, 'isatty') and sys.stdout.isatty()
