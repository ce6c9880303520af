"""Network pieces: the encoders f(x) -> h (backbones), the projection head g and the
non-negativity maps applied to its output. Plain PyTorch modules and functions, registered by
name in ``bayesncl_pyro.config.choices``; they may import only ``config``."""
