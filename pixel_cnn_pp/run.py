"""A training run: the official train.py's loop, top to bottom, in a save_dir that survives
real machines. Read it beside the official train.py's part under `perform training`; the
comments here are its own (`# init`, `# train for one epoch`, `# compute likelihood over test
data`, `# log progress to console`, `# generate samples from the model`, `# save params`):
`train` is its set-up and `# init` (the data-dependent init on init_batch_size images, or
--load_params' restore), `epochs` its epoch loop (`sess.run([bits_per_dim, optimizer])` is
Trainer.train_step: the update, then the Polyak average), `write_samples` its
`sample_from_model` and plotting.

What it calls, each a job of its own: training.Trainer (the steps' mathematics),
savedir.py (the folder, its lock, checkpoints, history and failed writes), stopping.py
(signals, preemption, time-based checkpoints; one process or a cluster), data.py (the
batches: a stateless function of the seed and the step, so resume is exact)."""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from pixel_cnn_pp import config as config_lib, data as data_lib, files, images, progress, sampling, savedir, \
    stopping, training
from pixel_cnn_pp.model import PixelCNNPP


def train(model_config, train_config, save_dir, data, strategy=None, resume=False, clock=time.monotonic):
    """Trains a PixelCNNPP of `model_config` with `train_config` into `save_dir` on `data` (a
    data.Data); resume=True continues the run save_dir holds from its newest readable
    checkpoint. Raises ConfigError (before anything is written), stopping.Preempted,
    savedir.WriteError, training.Diverged."""
    c = train_config
    strategy = strategy or tf.distribute.OneDeviceStrategy(
        '/gpu:0' if tf.config.list_physical_devices('GPU') else '/cpu:0')
    data_lib.check_fits(data, model_config, train_config, strategy.num_replicas_in_sync)
    chief = stopping.is_chief(strategy)
    task = getattr(getattr(strategy, 'cluster_resolver', None), 'task_id', 0)
    directory = save_dir if chief else os.path.join(save_dir, 'worker%d' % task)  # the others keep their own
    created = files.Created(save_dir) if chief and not resume else None  # removed if it fails unsaved
    saves = None
    try:
        with savedir.opened(save_dir, chief):
            keras.utils.set_random_seed(c.seed)  # the initial weights: Python, NumPy, TF, Keras
            with strategy.scope():
                trainer = training.Trainer(PixelCNNPP(**model_config.kwargs()), train_config, strategy)
            history = os.path.join(save_dir, 'test_bpd_%s.npz' % data_lib.file_stem(c.data_set))
            saves = savedir.Checkpoints(trainer, directory, history,
                                        chief, c.save_minutes, clock)
            print('%s over %d replica(s); each update: %d replica(s) x %d micro-batch(es) x %d images = %d images'
                  % (stopping.strategy_name(strategy), c.replicas, c.replicas, c.accum_steps, c.batch_size, c.update_images))
            # init
            if resume:
                print('restoring parameters from', saves.restore())
            else:
                saves.refuse_existing(save_dir)
                print('initializing the model...')
                first = training.epoch_order(len(data.train_x), c.seed, 0)[:c.init_batch_size]
                trainer.initialize(images.scale(data.train_x[first]),
                                   data.train_y[first] if model_config.num_labels else None)
            if chief:
                savedir.written(os.path.join(save_dir, config_lib.CONFIG_FILE),
                                lambda: config_lib.write(save_dir, (model_config, train_config)))
            writer = tf.summary.create_file_writer(os.path.join(save_dir, 'tensorboard')) if chief \
                else tf.summary.create_noop_writer()
            policy = stopping.Cluster(saves, strategy, chief, trainer.step) if stopping.is_cluster(strategy) \
                else stopping.Local(saves)
            print('starting training', flush=True)
            try:
                with policy, writer.as_default():
                    epochs(trainer, saves, policy, data, train_config, model_config, save_dir)
            finally:
                writer.close()
    except BaseException as e:
        if isinstance(e, savedir.WriteError):
            e.latest = saves.latest if saves else savedir.latest(directory)
        if created is not None and (saves is None or saves.saved is None):
            created.remove()  # a first run that failed before its first checkpoint leaves nothing
        raise


def epochs(trainer, saves, policy, data, c, model_config, save_dir):
    """The official loop from the current epoch to max_epochs."""
    test_batches = data_lib.test_batches(trainer.strategy, data, c.batch_size)
    steps = data_lib.steps_per_epoch(len(data.train_x), c.update_images)
    steps = min(steps, c.max_steps_per_epoch or steps)
    for epoch in range(int(trainer.epoch.numpy()), c.max_epochs):
        begin = time.time()
        # train for one epoch (from where a resumed run stopped)
        skip = int(trainer.epoch_step.numpy())
        losses, ran, seconds, t0 = saves.start_epoch(epoch), 0, 0., time.time()
        bar = progress.bar(steps, enabled=c.progress, stateful_metrics=['bits_per_dim', 'images/s'])
        batches = data_lib.train_batches(trainer.strategy, data, c.batch_size * c.accum_steps, c.seed, epoch,
                                         skip=skip, max_steps=steps)
        for k, batch in enumerate(batches, start=skip + 1):
            try:
                nats = trainer.train_step(batch)  # Adam's update, then the Polyak average
            except training.Diverged as e:
                latest = ' The latest checkpoint, %s, is from before it.' % saves.latest
                raise training.Diverged(e.template + latest, **e.values) from None
            except FloatingPointError as e:  # a batch with NaN pixels
                raise FloatingPointError('%s The latest checkpoint, %s, is from before it.' % (e, saves.latest)) from None
            seconds, ran = seconds + time.time() - t0, ran + 1
            losses.append(trainer.bits_per_dim(nats, c.update_images))
            bar.update(k, [('bits_per_dim', losses[-1]), ('images/s', ran * c.update_images / seconds)])
            step = trainer.step()
            if c.save_steps and step % c.save_steps == 0 and k < steps:
                saves.save(step)
            if k < steps:  # the epoch's end has its own stop
                policy.at_boundary(step)
            t0 = time.time()
        step = trainer.step()
        # compute likelihood over test data, with the averaged weights (until the epoch is
        # counted done, a stop abandons it, and the resumed run computes it again)
        test_bpd = trainer.evaluate(test_batches, stop=policy.abandon)
        if test_bpd is None:
            policy.stop(step)
        train_bpd = float(np.mean(losses)) if losses else float('nan')
        # log progress to console
        print('Iteration %d, time = %ds, train bits_per_dim = %.4f, test bits_per_dim = %.4f'
              % (epoch, time.time() - begin, train_bpd, test_bpd), flush=True)
        # generate samples from the model
        if epoch % c.save_interval == 0 and c.num_samples and not write_samples(
                trainer, policy, saves, c, model_config, epoch, save_dir):
            policy.stop(step)
        saves.test_bpd.append(test_bpd)
        trainer.epoch.assign(epoch + 1)
        trainer.epoch_step.assign(0)
        tf.summary.scalar('train/bits_per_dim', train_bpd, step=step)
        tf.summary.scalar('test/bits_per_dim', test_bpd, step=step)
        tf.summary.scalar('lr', float(trainer.optimizer.lr.numpy()), step=step)
        if ran:
            tf.summary.scalar('images_per_second', ran * c.update_images / max(seconds, 1e-9), step=step)
        # save params (and the last epoch's, which the official code may leave unsaved)
        if epoch % c.save_interval == 0 or epoch == c.max_epochs - 1:
            saves.save(step)
        policy.at_boundary(step, epoch_end=True)


def write_samples(trainer, policy, saves, c, model_config, epoch, save_dir):
    """The epoch's num_samples batches of samples from the averaged weights (PNG, .npz,
    TensorBoard); False when a stop abandoned them (asked before each batch), nothing written."""
    batch = c.batch_size * c.replicas
    drawn = []
    for i in range(c.num_samples):
        if policy.abandon():
            return False
        y = np.arange(batch) % model_config.num_labels if model_config.num_labels else None
        drawn.append(sampling.sample(trainer.ema_model, batch, h=None if y is None else trainer.one_hot(y),
                                     seed=c.seed * 100003 + epoch * 101 + i,
                                     method='naive' if model_config.energy_distance else 'fast'))
    drawn = np.concatenate(drawn)
    prefix = os.path.join(save_dir, '%s_sample%d' % (data_lib.file_stem(c.data_set), epoch))
    if saves.chief:
        savedir.written(prefix + '.png', lambda: images.write_samples(drawn, prefix))
    tf.summary.image('samples', drawn[:16], step=trainer.step(), max_outputs=16)
    print('wrote %s.png and .npz' % prefix)
    return True
