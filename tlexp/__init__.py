"""tlexp: sweep how many top layers of a pretrained Keras backbone to unfreeze, tracked in MLflow."""

__version__ = "0.1.0"
