"""The core's own components, registered through the same entry point mechanism as any plugin."""
from .hookspecs import hookimpl

_D = "memcore.datasets"


@hookimpl
def memcore_register_components(registry):
    registry.add("dataset", "fashion-mnist", f"{_D}:fashion_mnist", f"{_D}:FashionOptions",
                 help="Fashion-MNIST, 70,000 28x28 grey clothes in 10 classes (Debian package).")
    registry.add("dataset", "animal-mnist", f"{_D}:animal_mnist", f"{_D}:MnistLikeOptions",
                 help="animal-mnist, 10,000 28x28 animal silhouettes in 10 classes (PyPI).")
    registry.add("dataset", "image-folder", f"{_D}:image_folder", f"{_D}:FolderOptions",
                 help="Any folder of images, optionally labelled by sub-folder.")
    registry.add("dataset", "cifar10", f"{_D}:cifar10", f"{_D}:CifarOptions",
                 help="CIFAR-10 through torchvision (downloads when online).")


@hookimpl
def memcore_add_commands(commands):
    from .kit import check, scaffold
    commands.add("new-plugin", "Create a pip-installable memcore-NAME plugin package that works "
                 "as generated.", scaffold.configure, scaffold.command)
    commands.add("check", "Run a component's contract checks, each printed with pass or fail.",
                 check.configure, "memcore.kit.check:command")
