"""From image files to tensors: reading one image, the decoded cache, split tables, the data-set
layouts, the papers' augmentations, the built-in synthetic data and the CIFAR pickles.
"""
