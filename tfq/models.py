"""Small reference models for MNIST (uncompiled Keras 3 models)."""

import keras
from keras import layers

__all__ = ["lenet5", "lenet300_100", "small_bn_cnn"]


def lenet5(input_shape=(28, 28, 1), num_classes=10):
    """LeNet-5 (Caffe variant used by the pruning/ADMM papers): conv 20, conv 50, fc 500, fc 10."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(20, 5, activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(50, 5, activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(500, activation="relu", name="fc1"),
            layers.Dense(num_classes, name="fc2"),
        ],
        name="lenet5",
    )


def lenet300_100(input_shape=(28, 28, 1), num_classes=10):
    """LeNet-300-100: fully connected 784-300-100-10."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Flatten(name="flatten"),
            layers.Dense(300, activation="relu", name="fc1"),
            layers.Dense(100, activation="relu", name="fc2"),
            layers.Dense(num_classes, name="fc3"),
        ],
        name="lenet300_100",
    )


def small_bn_cnn(input_shape=(28, 28, 1), num_classes=10):
    """A small CNN with BatchNormalization (conv-BN-ReLU blocks, depthwise block, dense head)."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(16, 3, use_bias=False, name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.ReLU(name="relu1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(32, 3, use_bias=False, name="conv2"),
            layers.BatchNormalization(name="bn2"),
            layers.ReLU(name="relu2"),
            layers.DepthwiseConv2D(3, use_bias=False, name="dw3"),
            layers.BatchNormalization(name="bn3"),
            layers.ReLU(name="relu3"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(64, activation="relu", name="fc1"),
            layers.Dense(num_classes, name="fc2"),
        ],
        name="small_bn_cnn",
    )
