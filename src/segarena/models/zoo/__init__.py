"""Model implementations and wrappers, one module per source. Importing this package registers them all.

Heavy third-party libraries (smp, timm, transformers) are imported inside builders, so listing models is cheap.
"""
from . import (  # noqa: F401  (each module registers its models on import)
    dinov2,
    hiformer,
    internimage,
    litemedsam,
    mask2former,
    missformer,
    named,
    nnunet,
    sam,
    segformer,
    segnext,
    swin_umamba,
    swinunet,
    tiny,
    transnext,
    transunet,
    ukan,
    unet,
    unet_variants,
    upernet,
    vwformer,
)
