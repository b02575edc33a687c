"""Optimizers (SGD, Adam, AdamW, Adagrad) and learning-rate schedules, with torch's update rules and
torch-format state dicts."""
from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "lr_scheduler"]
