"""load_pretrained: never called by the benchmark (pretrained=False)."""


def load_pretrained(*args, **kwargs):
    raise NotImplementedError("pretrained weights are not available in the benchmark shim")
