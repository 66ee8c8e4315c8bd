"""register_model: remembers each factory by name in _models."""
_models = {}


def register_model(fn):
    _models[fn.__name__] = fn
    return fn
