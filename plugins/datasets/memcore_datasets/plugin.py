"""Registration only: the datasets' module (numpy, torch) is imported when a recipe uses one."""
import memcore

_D = "memcore_datasets.images"


@memcore.hookimpl
def memcore_api_version():
    return "1"  # the memcore API this plugin was written for (not the installed one)


@memcore.hookimpl
def memcore_register_components(registry):
    registry.add("dataset", "fashion-mnist", f"{_D}:fashion_mnist", f"{_D}:FashionOptions",
                 help="Fashion-MNIST, 70,000 28x28 grey clothes in 10 classes (Debian package).")
    registry.add("dataset", "animal-mnist", f"{_D}:animal_mnist", f"{_D}:MnistLikeOptions",
                 help="animal-mnist, 10,000 28x28 animal silhouettes in 10 classes (PyPI).")
    registry.add("dataset", "image-folder", f"{_D}:image_folder", f"{_D}:FolderOptions",
                 help="Any folder of images, optionally labelled by sub-folder.")
    registry.add("dataset", "cifar10", f"{_D}:cifar10", f"{_D}:CifarOptions",
                 help="CIFAR-10 through torchvision (downloads when online).")
