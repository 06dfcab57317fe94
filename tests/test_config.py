"""pixel_cnn_pp.config: the model and run configs, config.json, and what a resume may change."""

import json

import pytest

from pixel_cnn_pp import config
from pixel_cnn_pp.config import ConfigError, ModelConfig, TrainConfig


@pytest.mark.parametrize('shape', [(8, 12, 3), (4, 4, 1), [32, 32, 3]])
def test_shape_rule_accepts(shape):
    assert config.check_image_shape(shape) == tuple(shape)


@pytest.mark.parametrize('shape', [(10, 8, 3), (8, 6, 3), (8, 8, 2), (8, 8), (0, 8, 3), 'abc', None])
def test_shape_rule_refuses_naming_the_field(shape):
    with pytest.raises(ConfigError, match='image_shape must be') as e:
        config.check_image_shape(shape)
    assert e.value.fields == ('image_shape',)


def test_the_model_uses_the_one_shape_rule():
    from pixel_cnn_pp.model import PixelCNNPP
    with pytest.raises(ConfigError, match=r'image_shape must be .*got \(10, 8, 3\)'):
        PixelCNNPP(image_shape=(10, 8, 3))


@pytest.mark.parametrize('kwargs, field', [
    (dict(nr_resnet=0), 'nr_resnet'), (dict(nr_filters=2.5), 'nr_filters'),
    (dict(resnet_nonlinearity='tanh'), 'resnet_nonlinearity'), (dict(num_labels=-1), 'num_labels'),
    (dict(image_shape=(9, 8, 3)), 'image_shape'), (dict(dropout_p=1.), 'dropout_p')])
def test_model_config_validation(kwargs, field):
    with pytest.raises(ConfigError) as e:
        ModelConfig(**kwargs)
    assert e.value.fields == (field,) and field in str(e.value)


@pytest.mark.parametrize('kwargs, field', [
    (dict(batch_size=0), 'batch_size'), (dict(lr_decay=0.), 'lr_decay'),
    (dict(polyak_decay=1.5), 'polyak_decay'), (dict(learning_rate=-1.), 'learning_rate'),
    (dict(precision='float64'), 'precision'), (dict(data_set='mnist'), 'data_set'),
    (dict(save_steps=-1), 'save_steps'), (dict(save_minutes=-1.), 'save_minutes'),
    (dict(mutation_rate=2.), 'mutation_rate'), (dict(max_steps_per_epoch=0), 'max_steps_per_epoch'),
    (dict(accum_steps=True), 'accum_steps')])
def test_train_config_validation(kwargs, field):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kwargs)
    assert e.value.fields == (field,) and str(e.value).startswith(field)


def test_config_json_round_trip(tmp_path):
    model = ModelConfig(nr_resnet=1, nr_filters=8, image_shape=(8, 12, 1), num_labels=3)
    train = TrainConfig(batch_size=8, replicas=2, seed=5, max_steps_per_epoch=50, save_minutes=0.5)
    config.write(str(tmp_path), (model, train))
    saved = config.read(str(tmp_path))
    assert saved['image_shape'] == [8, 12, 1] and saved['batch_size'] == 8  # one flat JSON object
    assert config.run_configs(saved) == (model, train)
    assert train.update_images == 16
    assert not [p for p in tmp_path.iterdir() if 'tmp' in p.name]


def test_unreadable_config_json(tmp_path):
    (tmp_path / 'config.json').write_text('{"nr_resnet": 1, "nr_fil')
    with pytest.raises(ConfigError, match='config.json is not readable JSON'):
        config.read(str(tmp_path))
    (tmp_path / 'config.json').write_text('[1, 2]')
    with pytest.raises(ConfigError, match='expected a JSON object'):
        config.read(str(tmp_path))
    assert config.read(str(tmp_path / 'none')) is None


def test_failed_write_keeps_the_old_config(tmp_path, monkeypatch):
    config.write(str(tmp_path), {'a': 1})

    def full(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(config.json, 'dump', full)
    with pytest.raises(OSError, match='No space left'):
        config.write(str(tmp_path), {'a': 2})
    assert json.load(open(tmp_path / 'config.json')) == {'a': 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ['config.json']


SAVED = dict(ModelConfig(nr_resnet=1, nr_filters=8, image_shape=(8, 8, 3)).to_dict(),
             **TrainConfig(batch_size=8, max_steps_per_epoch=50, save_steps=20, max_epochs=5).to_dict())


def test_resume_restores_the_whole_run():
    model, train, changed, unrecorded = config.resume(SAVED, {})
    assert train.batch_size == 8 and train.max_steps_per_epoch == 50 and train.max_epochs == 5
    assert model.nr_filters == 8 and changed == [] and unrecorded == []


@pytest.mark.parametrize('field, value', [
    ('batch_size', 16), ('learning_rate', 0.002), ('seed', 2), ('lr_decay', 0.9), ('dropout_p', 0.),
    ('polyak_decay', 0.99), ('accum_steps', 2), ('replicas', 2), ('precision', 'mixed_bfloat16'),
    ('data_set', 'imagenet'), ('mutation_rate', 0.1), ('max_steps_per_epoch', 10), ('l2_weight', 1e-3),
    ('nr_filters', 16)])
def test_resume_refuses_what_would_change_the_run(field, value):
    with pytest.raises(ConfigError) as e:
        config.resume(SAVED, {field: value}, 'save')
    assert e.value.fields == (field,)
    assert e.value.values[field] == value and e.value.values['_saved'] == SAVED[field]
    assert str(e.value).startswith('%s=%s, but the run in save being resumed has %s=%s'
                                   % (field, value, field, SAVED[field]))


def test_resume_takes_what_may_change():
    given = dict(max_epochs=10, save_steps=5, save_minutes=1., save_interval=2, num_samples=0,
                 recompute=True, progress=False, xla=True, data_dir='elsewhere', batch_size=8)
    _, train, changed, _ = config.resume(SAVED, given)
    assert train.max_epochs == 10 and train.save_minutes == 1. and train.recompute and train.batch_size == 8
    assert ('max_epochs', 5, 10) in changed and ('batch_size', 8, 8) not in changed
    assert len(changed) == 9


def test_an_old_config_json_still_resumes():
    """config.json before the run config: the model keys and four run keys."""
    old = dict(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, resnet_nonlinearity='concat_elu',
               energy_distance=False, image_shape=[8, 8, 3], num_labels=0, mutation_rate=0.,
               l2_weight=0., accum_steps=2, recompute=False)
    model, train, changed, unrecorded = config.resume(old, {'batch_size': 4, 'replicas': 1})
    assert model == ModelConfig(nr_resnet=1, nr_filters=8, nr_logistic_mix=2, image_shape=(8, 8, 3))
    assert train.accum_steps == 2 and train.batch_size == 4 and changed == []
    assert 'batch_size' in unrecorded and 'accum_steps' not in unrecorded
    with pytest.raises(ConfigError, match='accum_steps=4, but'):
        config.resume(old, {'accum_steps': 4})
