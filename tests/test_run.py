"""The run's lifecycle (pixel_cnn_pp.run) on real machines: a signal at the epoch's end
(evaluation, samples) or mid-epoch, a real full disk and other failed writes, time-based
checkpoints (one clock; agreed by two workers). (The run folder itself: test_savedir.py;
train.py's flags and messages: test_train_cli.py.)"""

import contextlib
import dataclasses
import errno
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, free_ports, script_env

TINY = ['--nr_resnet=1', '--nr_filters=8', '--nr_logistic_mix=2', '--batch_size=4',
        '--init_batch_size=4', '--noprogress', '--seed=7']


def write_npz(path, n_train=24, n_test=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, train_x=rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8),
             test_x=rng.integers(0, 256, (n_test, size, size, 3), dtype=np.uint8))
    return str(path)


def train_script(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'train.py')] + list(args), env=env or script_env(TF_CPP_MIN_LOG_LEVEL=None),
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def tmpfs(size):
    """A tmpfs of `size` (mount's syntax, e.g. '2m') on a fresh folder, unmounted afterwards;
    the test is skipped where mounting is not permitted (not root, a container without
    CAP_SYS_ADMIN)."""
    where = tempfile.mkdtemp(prefix='pixelcnn_tmpfs_')
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=' + size, 'tmpfs', where],
                             capture_output=True, text=True) if os.geteuid() == 0 else None
    if mounted is None or mounted.returncode:
        os.rmdir(where)
        pytest.skip('cannot mount a tmpfs here (%s)' % ('not root' if mounted is None else mounted.stderr.strip()))
    try:
        yield where
    finally:
        if subprocess.run(['umount', where]).returncode:  # busy: a file still open
            subprocess.run(['umount', '-l', where], check=True)
        os.rmdir(where)


# ---------------------------------------------------------------------- a stop at the epoch's end

from pixel_cnn_pp import config as config_lib, data as data_lib, run as run_lib, savedir, stopping  # noqa: E402
from pixel_cnn_pp.config import ModelConfig, TrainConfig  # noqa: E402
from pixel_cnn_pp.training import Trainer  # noqa: E402

END_MODEL = ModelConfig(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, image_shape=(8, 8, 3), dropout_p=0.5)
NO_DROPOUT = dataclasses.replace(END_MODEL, dropout_p=0.)
END_RUN = TrainConfig(data_set='npz', batch_size=4, init_batch_size=4, max_epochs=1, max_steps_per_epoch=4,
                      save_interval=1, num_samples=0, seed=7, progress=False)
# with samples: two epochs, two batches of samples each
SAMPLES_RUN = dataclasses.replace(END_RUN, max_epochs=2, num_samples=2)
EPOCH_LINE = re.compile(r'^Iteration (\d+), time = \d+s, train bits_per_dim = (\S+), test bits_per_dim = (\S+)$', re.M)


def end_data(n_train=16):
    rng = np.random.default_rng(0)  # 6 test images: two evaluation batches of 4
    return data_lib.Data(rng.integers(0, 256, (n_train, 8, 8, 3), dtype=np.uint8), None,
                         rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), None, 0)


def run_state(save_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(save_dir)))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith(('params/', 'ema/', 'adam/', 'epoch'))}


def uninterrupted(config, save_dir):
    """The run of config straight, with dropout: (save_dir, final state, its epoch lines)."""
    import io
    with contextlib.redirect_stdout(io.StringIO()) as out:
        run_lib.train(END_MODEL, config, str(save_dir), end_data())
    return save_dir, run_state(save_dir), EPOCH_LINE.findall(out.getvalue())


def signal_at(monkeypatch, n):
    """SIGTERM to this process at the n-th stop check of the epoch's end (the evaluation asks
    before each of its batches, then the samples before each of theirs)."""
    asked = []
    abandon = stopping.Local.abandon

    def signal_midway(self):
        asked.append(1)
        if len(asked) == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return abandon(self)

    monkeypatch.setattr(stopping.Local, 'abandon', signal_midway)


def assert_stopped_at_the_epoch_end(e, save):
    """Preempted with a checkpoint of step 4, the end of epoch 0 (position 4 of 4), no samples,
    no test bits/dim of epoch 0 in the history but the train bits/dim of its 4 steps, no lock."""
    assert (e.value.signum, e.value.step) == (signal.SIGTERM, 4) and e.value.checkpoint == str(save / 'ckpt-4')
    state = run_state(save)
    assert state['epoch/.ATTRIBUTES/VARIABLE_VALUE'] == 0 and state['epoch_step/.ATTRIBUTES/VARIABLE_VALUE'] == 4
    history = np.load(save / 'test_bpd_npz.npz')
    assert len(history['test_bpd']) == 0 and history['train_bpd_epoch'] == 0 and len(history['train_bpd']) == 4
    assert not list(save.glob('npz_sample*')) and not (save / 'lock').exists()
    return history['train_bpd']


def test_a_signal_during_the_evaluation_abandons_it_and_resume_evaluates(tmp_path, monkeypatch, capsys):
    """SIGTERM after the first of the epoch's two evaluation batches: the second is not run, a
    checkpoint of the epoch's last step. Resumed, the run trains nothing, evaluates the epoch
    and prints its line: the train bits/dim the mean of the 4 steps trained before the signal
    (kept in the history file), the test bits/dim that of the checkpoint's EMA weights (an
    Evaluator of the loaded model)."""
    import pixel_cnn_pp
    from pixel_cnn_pp import training
    save = tmp_path / 'save'
    signal_at(monkeypatch, 2)
    with pytest.raises(stopping.Preempted) as e:
        run_lib.train(END_MODEL, END_RUN, str(save), end_data())
    train_bpd = assert_stopped_at_the_epoch_end(e, save)
    assert not EPOCH_LINE.findall(capsys.readouterr().out)
    monkeypatch.undo()
    run_lib.train(END_MODEL, END_RUN, str(save), end_data(), resume=True)
    out = capsys.readouterr().out
    assert 'note:' not in out and tf.train.latest_checkpoint(str(save)) == str(save / 'ckpt-4')
    model = pixel_cnn_pp.load(save)
    strategy = tf.distribute.get_strategy()
    test_bpd = training.Evaluator(strategy, model).evaluate(
        data_lib.test_batches(strategy, end_data(), 4), (8, 8, 3))
    assert EPOCH_LINE.findall(out) == [('0', '%.4f' % np.mean(train_bpd), '%.4f' % test_bpd)]
    np.testing.assert_allclose(np.load(save / 'test_bpd_npz.npz')['test_bpd'], [test_bpd], rtol=1e-6)


@pytest.mark.slow
def test_a_signal_during_the_samples_abandons_them_and_resume_is_exact(tmp_path, monkeypatch, capsys):
    """SIGTERM after the first of epoch 0's two sample batches (its evaluation done, its line
    printed): the rest abandoned, nothing of the samples written, a checkpoint of the epoch's
    last step. Resumed, the run evaluates epoch 0 again and writes its samples: its epoch lines
    are the uninterrupted run's (train bits/dim of all of epoch 0's steps), and it ends with its
    weights, Adam state, history and samples, bit for bit (dropout on)."""
    straight_dir, straight_state, straight_lines = uninterrupted(SAMPLES_RUN, tmp_path / 'straight')
    save = tmp_path / 'save'
    signal_at(monkeypatch, 4)  # 2 evaluation batches, then the samples
    with pytest.raises(stopping.Preempted) as e:
        run_lib.train(END_MODEL, SAMPLES_RUN, str(save), end_data())
    assert_stopped_at_the_epoch_end(e, save)
    assert EPOCH_LINE.findall(capsys.readouterr().out) == straight_lines[:1]
    monkeypatch.undo()
    run_lib.train(END_MODEL, SAMPLES_RUN, str(save), end_data(), resume=True)
    out = capsys.readouterr().out
    assert 'note:' not in out and EPOCH_LINE.findall(out) == straight_lines
    resumed = run_state(save)
    assert resumed.keys() == straight_state.keys()
    for k in straight_state:
        np.testing.assert_array_equal(resumed[k], straight_state[k], err_msg=k)
    for name in ('test_bpd_npz.npz', 'npz_sample0.npz', 'npz_sample1.npz'):
        a, b = np.load(save / name), np.load(straight_dir / name)
        assert a.files == b.files
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=name + ' ' + k)


@pytest.mark.slow
def test_a_real_full_disk_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    """train.py with its save_dir on a 1.6 MB tmpfs, a checkpoint every step: config.json and
    ckpt-1 and ckpt-2 fit (about 0.7 MB each), ckpt-3 meets a real ENOSPC. Exit status 3, one
    line naming ckpt-3 and the system's error, the latest checkpoint ckpt-2 (it loads), nothing
    of ckpt-3 left, no lock. Then the disk filled to the last byte: the resume's lock file
    cannot be written, the same message, and what the run held stays. Space freed (the filler, ckpt-1), the
    resume finishes."""
    data = write_npz(tmp_path / 'data.npz', n_train=48)
    args = TINY + ['--data_set=npz', '--data_dir=' + data, '--save_steps=1', '--max_epochs=1', '--num_samples=0']
    with tmpfs('1600k') as disk:
        save = os.path.join(disk, 'save')
        out = train_script('--save_dir=' + save, *args)
        assert out.returncode == 3, out.stderr
        assert out.stderr.splitlines() == ['train.py: error: cannot write %s/ckpt-3 (No space left on device); the run stopped, its '
                          'latest checkpoint is %s/ckpt-2' % (save, save)], out.stderr
        assert sorted(os.listdir(save)) == ['checkpoint', 'ckpt-1.data-00000-of-00001', 'ckpt-1.index',
                                            'ckpt-2.data-00000-of-00001', 'ckpt-2.index', 'config.json',
                                            'tensorboard', 'test_bpd_npz.npz']
        assert tf.train.latest_checkpoint(save) == os.path.join(save, 'ckpt-2')
        import pixel_cnn_pp
        from pixel_cnn_pp import checkpoints
        assert checkpoints.run_checkpoints(save) == [os.path.join(save, 'ckpt-2'), os.path.join(save, 'ckpt-1')]
        assert pixel_cnn_pp.load(save).checkpoint_path == os.path.join(save, 'ckpt-2')
        assert tf.train.load_checkpoint(os.path.join(save, 'ckpt-2')).get_tensor(
            'adam/step/.ATTRIBUTES/VARIABLE_VALUE') == 2

        config = open(os.path.join(save, 'config.json')).read()
        with open(os.path.join(disk, 'filler'), 'wb', buffering=0) as f:  # the rest of the disk
            with contextlib.suppress(OSError):
                while True:
                    f.write(b'\0' * 4096)
        out = train_script('--save_dir=' + save, '--load_params', '--max_epochs=1')
        assert out.returncode == 3, out.stderr
        assert out.stderr.splitlines() == ['train.py: error: cannot write %s/lock (No space left on device); the run '
                                           'stopped, its latest checkpoint is %s/ckpt-2' % (save, save)], out.stderr
        assert open(os.path.join(save, 'config.json')).read() == config
        assert tf.train.latest_checkpoint(save) == os.path.join(save, 'ckpt-2')
        assert not [p for p in os.listdir(save) if 'tmp' in p or p.endswith('_temp') or p == 'lock']

        for name in ['filler'] + [p for p in os.listdir(save) if p.startswith('ckpt-1.')]:  # the user frees space
            os.remove(os.path.join(disk, name) if name == 'filler' else os.path.join(save, name))
        out = train_script('--save_dir=' + save, '--load_params', '--max_epochs=1', '--save_steps=0')
        assert out.returncode == 0, out.stderr
        assert 'restoring parameters from %s/ckpt-2' % save in out.stdout
        assert tf.train.latest_checkpoint(save) == os.path.join(save, 'ckpt-12')


# ---------------------------------------------------------------------- a signal mid-epoch, the clock, a failed write

# two epochs of 5 steps, with dropout
STEPS_RUN = dataclasses.replace(END_RUN, max_epochs=2, max_steps_per_epoch=5)


def step_hook(monkeypatch, at_step):
    """Calls at_step(step) after every training step, as the signal or the clock would act."""
    train_step = Trainer.train_step

    def hooked(self, batch):
        nats = train_step(self, batch)
        at_step(int(self.optimizer.step.numpy()))
        return nats

    monkeypatch.setattr(Trainer, 'train_step', hooked)


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory):
    """Two epochs of 5 steps, uninterrupted, with dropout."""
    d = tmp_path_factory.mktemp('straight')
    run_lib.train(END_MODEL, STEPS_RUN, str(d), end_data(24))
    return run_state(d), np.load(d / 'test_bpd_npz.npz')['test_bpd']


def test_signal_checkpoints_the_step_and_resume_is_exact(tmp_path, monkeypatch, straight_run, signum=signal.SIGTERM):
    """A signal mid-epoch (step 3 of 5): the step in flight completes, a checkpoint of step 3
    (position 3 in epoch 0) is written, the lock released, Preempted raised; a second signal
    during that save changes nothing. Resumed, the run ends with the uninterrupted run's
    weights, Adam state and history, bit for bit (dropout on)."""
    save = str(tmp_path / 'save')
    data = end_data(24)
    save_method = savedir.Checkpoints.save

    def save_with_second_signal(self, step):
        os.kill(os.getpid(), signum)  # arrives while stopping: ignored
        return save_method(self, step)

    step_hook(monkeypatch, lambda step: step == 3 and os.kill(os.getpid(), signum))
    monkeypatch.setattr(savedir.Checkpoints, 'save', save_with_second_signal)
    with pytest.raises(stopping.Preempted) as e:
        run_lib.train(END_MODEL, STEPS_RUN, save, data)
    assert (e.value.signum, e.value.step) == (signum, 3) and e.value.checkpoint.endswith('ckpt-3')
    assert tf.train.latest_checkpoint(save).endswith('ckpt-3')
    assert run_state(save)['epoch_step/.ATTRIBUTES/VARIABLE_VALUE'] == 3
    assert not os.path.exists(os.path.join(save, 'lock'))
    assert signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL)  # restored
    monkeypatch.undo()
    model, train, changed, _ = config_lib.resume_from(save, {})
    assert (model, train, changed) == (END_MODEL, STEPS_RUN, [])
    run_lib.train(model, train, save, data, resume=True)
    state, history = straight_run
    resumed = run_state(save)
    assert resumed.keys() == state.keys()
    for k in state:
        np.testing.assert_array_equal(resumed[k], state[k], err_msg=k)
    np.testing.assert_array_equal(np.load(os.path.join(save, 'test_bpd_npz.npz'))['test_bpd'], history)


def test_time_based_checkpoints(tmp_path, monkeypatch):
    """save_minutes=1 with a clock that advances 20 s a step: a checkpoint every 3 steps
    (3, 6), at the epoch's end (7), never twice at one step."""
    now = [0.]
    step_hook(monkeypatch, lambda step: now.__setitem__(0, now[0] + 20.))
    saved = []
    save_method = savedir.Checkpoints.save
    monkeypatch.setattr(savedir.Checkpoints, 'save', lambda self, step: saved.append(step) or save_method(self, step))
    train = dataclasses.replace(STEPS_RUN, max_epochs=1, max_steps_per_epoch=7, save_minutes=1.)
    run_lib.train(NO_DROPOUT, train, str(tmp_path), end_data(28), clock=lambda: now[0])
    assert saved == [3, 6, 7]
    assert sorted(p.name for p in tmp_path.glob('ckpt-*.index')) == ['ckpt-3.index', 'ckpt-6.index',
                                                                      'ckpt-7.index']


@pytest.mark.parametrize('what', ['checkpoint', 'history', 'config'])
def test_a_failed_write_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, what):
    """ENOSPC at a checkpoint (its files half written), the history or config.json: a
    WriteError naming the file; the previous checkpoint stays the latest and loads, and the
    run resumes from it; nothing half-written is left to be taken for a checkpoint."""
    save = str(tmp_path / 'save')
    data = end_data(24)
    train = dataclasses.replace(STEPS_RUN, max_epochs=1, save_steps=2)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    if what == 'checkpoint':
        manager_save = tf.train.CheckpointManager.save

        def failing_save(self, checkpoint_number=None):
            if checkpoint_number == 4:
                with open(os.path.join(save, 'ckpt-4.index'), 'wb') as f:
                    f.write(b'half')  # as a write cut short
                raise tf.errors.ResourceExhaustedError(None, None, 'ckpt-4.index; No space left on device')
            return manager_save(self, checkpoint_number=checkpoint_number)

        monkeypatch.setattr(tf.train.CheckpointManager, 'save', failing_save)
        path = os.path.join(save, 'ckpt-4')
    elif what == 'history':
        step_hook(monkeypatch, lambda step: step == 3 and monkeypatch.setattr(savedir.np, 'savez', full))
        path = os.path.join(save, 'test_bpd_npz.npz')
    else:
        monkeypatch.setattr(config_lib.json, 'dump', full)
        path = os.path.join(save, 'config.json')
    with pytest.raises(savedir.WriteError) as e:
        run_lib.train(NO_DROPOUT, train, save, data)
    assert e.value.filename == path and e.value.errno in (errno.ENOSPC, errno.EIO)
    assert 'No space left on device' in e.value.strerror
    monkeypatch.undo()
    if what == 'config':  # before the first checkpoint: the run leaves nothing
        assert not os.path.exists(save)
        return
    assert tf.train.latest_checkpoint(save).endswith('ckpt-2') and e.value.latest.endswith('ckpt-2')
    assert not [p for p in os.listdir(save) if p.startswith('ckpt-4') or 'tmp' in p or p == 'lock']
    from pixel_cnn_pp import checkpoints
    assert checkpoints.load(save).checkpoint_path.endswith('ckpt-2')
    if what == 'checkpoint':  # (the resume from ckpt-2 after either failure is the same)
        run_lib.train(*config_lib.resume_from(save, {})[:2], save, data, resume=True)
        assert tf.train.latest_checkpoint(save).endswith('ckpt-5')


# ---------------------------------------------------------------------- two workers, save_minutes



SAVED_LINE = re.compile(r'^step (\d+): checkpoint \S+, [\d.]+ minutes after the last$', re.M)


@pytest.mark.slow
def test_two_workers_take_time_based_checkpoints_at_the_same_steps(tmp_path):
    """MultiWorkerMirroredStrategy, --save_minutes=0.01 (0.6 s of real time on each worker's own
    clock): the chief's clock decides, both workers save at the same steps (their lines), the
    chief's checkpoints are those steps, and the worker's last checkpoint equals the chief's."""
    data = write_npz(tmp_path / 'data.npz', n_train=800, size=16)
    cluster = {'worker': ['localhost:%d' % p for p in free_ports(2)]}
    save = tmp_path / 'save'
    args = TINY + ['--data_set=npz', '--data_dir=' + data, '--save_dir=%s' % save, '--max_epochs=1',
                   '--num_samples=0', '--save_minutes=0.01']
    procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py')] + args, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=script_env(
                                  GCE_METADATA_IP='127.0.0.1:9', TF_CONFIG=json.dumps(
                                      {'cluster': cluster, 'task': {'type': 'worker', 'index': i}})))
             for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    steps = [[int(s) for s in SAVED_LINE.findall(out)] for out in outs]
    assert len(steps[0]) >= 2 and steps[0] == steps[1], outs
    kept = sorted(int(p.name[5:-6]) for p in save.glob('ckpt-*.index'))
    assert kept == sorted(set(steps[0] + [100]))[-3:]  # 100 steps: the epoch's end saves too
    reader = tf.train.load_checkpoint(str(save / 'worker1' / 'ckpt-100'))
    chief = tf.train.load_checkpoint(str(save / 'ckpt-100'))
    for k in reader.get_variable_to_shape_map():
        if k.startswith(('params/', 'ema/', 'adam/')):
            np.testing.assert_array_equal(reader.get_tensor(k), chief.get_tensor(k), err_msg=k)


class FakeCoordinationService:
    """The key-value store of TensorFlow's coordination service as _AgreedSaves uses it: values
    it holds already, the ones set, and a lookup of a missing key ends the watcher (as the
    service does when the chief is gone)."""

    def __init__(self, values):
        self.values, self.set = dict(values), {}

    def get_config_key_value(self, key):
        if key not in self.values:
            raise RuntimeError('the service is gone')
        return self.values[key]

    def set_config_key_value(self, key, value):
        self.set[key] = value


def test_a_worker_acknowledges_agreed_saves_under_its_own_index():
    """A worker's watcher acknowledges each save the chief announces under its own index, from
    its very first acknowledgement (the chief waits for the acknowledgements of indices 1..n-1:
    one under another index would leave it waiting for ever)."""
    key = stopping.AgreedSaves.KEY
    service = FakeCoordinationService({key % 0: '7', key % 1: '12', key % 2: stopping.AgreedSaves.STOP})
    agreed = stopping.AgreedSaves(chief=False, workers=3, worker_id=2, context=service)
    agreed.watcher.join(30)
    assert service.set == {key % 0 + '_ack_2': '1', key % 1 + '_ack_2': '1'}
    assert agreed.due(7) and agreed.due(12) and not agreed.due(7)
    chief = FakeCoordinationService({key % 0 + '_ack_1': '1', key % 0 + '_ack_2': '1'})
    agreed = stopping.AgreedSaves(chief=True, workers=3, worker_id=0, context=chief)
    agreed.announce(5)
    assert chief.set == {key % 0: '5'} and agreed.due(5) and agreed.watcher is None
