"""The data the scripts read: the layouts (`DATASETS`, one per `--dataset`), split tables, image sets
and their canvas. The card's datasets module: what the scripts share, re-exported from the library
(`safehil.data.datasets`, where each layout is registered)."""
from safehil.data.datasets import (DATASETS, MULTI_LABEL_RULES, ImageSet, augmentation_style, checkpoint_canvas,
                                   decode_request, load_image_sets, load_image_sets_checked, load_split_table,
                                   normalisation_for, plan_table_canvas, scan_dataset)

__all__ = ["DATASETS", "MULTI_LABEL_RULES", "ImageSet", "augmentation_style", "checkpoint_canvas", "decode_request",
           "load_image_sets", "load_image_sets_checked", "load_split_table", "normalisation_for",
           "plan_table_canvas", "scan_dataset"]
