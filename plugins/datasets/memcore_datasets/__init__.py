"""memcore's datasets, a plugin like any other: Fashion-MNIST, animal-mnist, CIFAR-10 and any
folder of images (:mod:`.images`, which also holds the helpers other plugins build their datasets
with: :class:`~.images.TensorImageDataset`, ``finish``, ``cache_dir``)."""
