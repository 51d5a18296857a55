"""Small reference models for MNIST (uncompiled Keras 3 models)."""

import keras
from keras import layers

__all__ = ["lenet5", "lenet300_100", "small_bn_cnn", "mnist_cnn"]


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


def mnist_cnn(input_shape=(28, 28, 1), num_classes=10):
    """A CNN wide enough for block sparsity to matter: five 3x3 convolutions (32-128 channels) with BN, then Dense.

    The middle convolutions (32->64 and 64->64 at 14x14, 64->128 and
    128->128 at 7x7) hold most of the weights and multiply-adds; the first
    convolution and the classifier are the small layers a default policy
    keeps in float.
    """

    def conv_bn(filters, name):
        return [layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name),
                layers.BatchNormalization(name=f"{name}_bn"), layers.ReLU(name=f"{name}_relu")]

    return keras.Sequential(
        [keras.Input(input_shape)]
        + conv_bn(32, "conv1") + [layers.MaxPooling2D(2, name="pool1")]
        + conv_bn(64, "conv2") + conv_bn(64, "conv3") + [layers.MaxPooling2D(2, name="pool2")]
        + conv_bn(128, "conv4") + conv_bn(128, "conv5")
        + [layers.GlobalAveragePooling2D(name="gap"), layers.Dense(num_classes, name="fc")],
        name="mnist_cnn",
    )
