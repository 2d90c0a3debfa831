"""CPU benchmarks of the Keras VGG port against torchvision: one module per measured question (see ``__main__``)."""
