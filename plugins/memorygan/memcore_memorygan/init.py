"""The code's initialiser, shared by the DCGAN and the ResNet networks."""
from torch import nn


def init_weights(module: nn.Module) -> None:
    """Truncated normal, std 0.02 (cut at 2 std, as TF), zero bias, for every fc/conv (the
    code's initialiser)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
