"""The UFFDIO_MOVE uABI spec: the YAML, its schema, and the model they make."""

from .errors import Position, SpecError
from .loader import DEFAULT_SPEC, load, loads
from .model import Behaviour, Expectation, Spec, Version

__all__ = ["DEFAULT_SPEC", "Behaviour", "Expectation", "Position", "Spec", "SpecError",
           "Version", "load", "loads"]
