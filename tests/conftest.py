import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Grappler's graph rewrites cost seconds per traced step and buy nothing on tests' tiny models.
tf.config.optimizer.set_experimental_options({'disable_meta_optimizer': True})

# Two logical CPU devices, so tests can run MirroredStrategy with two replicas.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices('CPU')[0], [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same random weights and dropout masks."""
    keras.utils.set_random_seed(1234)


@pytest.fixture(scope='session')
def two_replicas():
    """One strategy per process, as in a real run: MirroredStrategy objects over the same
    devices would share collective keys."""
    return tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])


@pytest.fixture(scope='session')
def one_replica():
    return tf.distribute.OneDeviceStrategy('/cpu:0')
