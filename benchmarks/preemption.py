"""What the run's stop and time checks cost per training step: pixel_cnn_pp.run.Run's step
boundary (Run._after_step: the step counter read, the signal flag, the save_minutes clock),
and under MultiWorkerMirroredStrategy the checks added to it (PreemptionCheckpointHandler's
save_checkpoint_if_preempted, the agreed time-based save's lookup), against the step time of
a small and of the paper's model on this machine.

    python benchmarks/preemption.py                        # small and paper, batch 16
    python benchmarks/preemption.py --sizes=small --steps=5

Prints JSON: microseconds per boundary check (median of --repeats rounds of --calls calls),
the seconds per training step of each model, and the check's share of the step.
"""

import json
import os
import sys
import tempfile
import time

from absl import app, flags, logging
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pixel_cnn_pp import images, savedir, stopping, training  # noqa: E402
from pixel_cnn_pp import PixelCNNPP  # noqa: E402

flags.DEFINE_list('sizes', ['small', 'paper'], 'Models whose step time to measure: small, paper')
flags.DEFINE_integer('batch_size', 16, 'Images per step')
flags.DEFINE_integer('steps', 3, 'Training steps timed per model (after one warm-up step)')
flags.DEFINE_integer('calls', 20000, 'Boundary checks per round')
flags.DEFINE_integer('repeats', 5, 'Rounds (the median is printed)')
FLAGS = flags.FLAGS

SIZES = {'small': dict(nr_resnet=2, nr_filters=64, nr_logistic_mix=10),
         'paper': dict(nr_resnet=5, nr_filters=160, nr_logistic_mix=10)}


def microseconds(fn):
    rounds = []
    for _ in range(FLAGS.repeats):
        t0 = time.perf_counter()
        for _ in range(FLAGS.calls):
            fn()
        rounds.append((time.perf_counter() - t0) / FLAGS.calls * 1e6)
    return float(np.median(rounds))


def boundary_costs():
    """The single-process policy's check at a step boundary (stopping.Local, neither a signal
    nor the clock due), and the multi-worker checks."""
    trainer = training.Trainer(PixelCNNPP(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, image_shape=(8, 8, 3)))
    save_dir = tempfile.mkdtemp()
    saves = savedir.Checkpoints(trainer, save_dir, os.path.join(save_dir, 'history.npz'), True, 30., time.monotonic)
    with stopping.Local(saves) as policy:
        single = microseconds(lambda: policy.at_boundary(trainer.step()))
    agreed = stopping.AgreedSaves(chief=True, workers=1, worker_id=0)
    step = trainer.step()
    lookup = microseconds(lambda: agreed.due(step))
    handler = None
    try:  # the handler's check at a boundary, in its local mode (no coordination service to ask)
        strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
        with strategy.scope():
            ckpt = tf.train.Checkpoint(v=tf.Variable(0.))
        termination = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=lambda: False, exit_fn=lambda: None, grace_period=0)
        handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            tf.distribute.cluster_resolver.SimpleClusterResolver(tf.train.ClusterSpec({})),
            tf.train.CheckpointManager(ckpt, os.path.join(save_dir, 'handler'), max_to_keep=1),
            termination_config=termination)
        preemption = microseconds(handler.save_checkpoint_if_preempted)
    except (ValueError, TypeError, NotImplementedError) as e:
        preemption = 'not measured (%s)' % e
    return dict(single_process_us=single, multi_worker_agreed_lookup_us=lookup,
                multi_worker_preemption_check_us=preemption)


def step_seconds(size):
    trainer = training.Trainer(PixelCNNPP(**SIZES[size], image_shape=(32, 32, 3)))
    x = np.random.default_rng(0).integers(0, 256, (FLAGS.batch_size, 32, 32, 3), dtype=np.uint8)
    trainer.initialize(images.scale(x))
    batch = (tf.constant(images.scale(x)), tf.zeros(FLAGS.batch_size, tf.int32), tf.ones(FLAGS.batch_size))
    trainer.train_step(batch)  # traces
    times = []
    for _ in range(FLAGS.steps):
        t0 = time.perf_counter()
        trainer.train_step(batch)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # the handler's INFO lines
    costs = boundary_costs()
    out = dict(costs, batch_size=FLAGS.batch_size, device='GPU' if tf.config.list_physical_devices('GPU') else 'CPU')
    for size in FLAGS.sizes:
        seconds = step_seconds(size)
        out['%s_step_s' % size] = seconds
        out['%s_share_of_step' % size] = costs['single_process_us'] * 1e-6 / seconds
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    app.run(main)
