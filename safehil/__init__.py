"""The library under the scripts, one sub-package per concern, lowest first (nothing imports upward):

    core      plumbing: seeding, device, distributed, atomic writes, checkpoint I/O, locks, the CSV formula guard
    settings  configuration: the command-line layer (cli), the Config bases and run folders, the papers' presets
              and the named training recipes
    data      images on disk -> tensors: reading, the decoded cache, split tables, layouts, augmentations,
              the built-in synthetic data and CIFAR
    training  the networks (models), the one fit loop (training) and resumable grids of tasks (runner)
    uq        MC-dropout uncertainty and saliency
    active    active-learning query strategies and VAAL
    safety    the two-model cascade, Learn-then-Test risk control, scoring files, the ONNX bundle
    review    the operator's review page and Label Studio's formats
    report    the published numbers, confidence intervals, verdicts and REPORT.md
"""
