"""Model implementations and wrappers, one module per source. Importing this package registers them all.

Heavy third-party libraries (smp, timm, transformers) are imported inside builders, so listing models is cheap.
"""
from . import segformer, tiny, unet  # noqa: F401
from . import dinov2, mask2former, sam  # noqa: F401  (foundation models: DINOv2, SAM, Mask2Former)
from . import segnext, upernet, vwformer  # noqa: F401  (general zoo part 1: SegNeXt, UPerNet, VWFormer)
from . import nnunet, swin_umamba, unet_variants  # noqa: F401  (medical zoo part 2)
from . import hiformer, missformer, swinunet, transunet, ukan  # noqa: F401  (medical zoo part 1)
from . import internimage, transnext  # noqa: F401  (general zoo part 2: InternImage, TransNeXt)
