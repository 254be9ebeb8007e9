"""Dataset adapters, one module per release layout. Importing this package registers them all."""
from . import busi, folder, hc18, kvasir  # noqa: F401
