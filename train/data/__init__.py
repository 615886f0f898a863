"""Data: COCO-format instance loader, transforms and the synthetic shapes data set."""
