"""Dataset adapters, one module per release layout. Importing this package registers them all."""
from . import busbra, busi, camus, cvc_clinicdb, drive, folder, hc18, isic2018, kvasir, neopolyp, ph2  # noqa: F401
