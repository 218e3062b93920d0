from .fake_api import fake, stopped_after

__all__ = ["fake", "stopped_after"]
