import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


import keras
import pytest


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same random weights and dropout masks."""
    keras.utils.set_random_seed(1234)
