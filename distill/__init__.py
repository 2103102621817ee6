"""Teacher and students (``rrdistill.distill``): generation backends, reasoning-data synthesis,
GRPO rewards, teacher SFT/GRPO with trl, labelling with teacher permutations and student distillation.

Needs the ``[train]`` extra; every module imports torch/transformers/trl lazily.
"""
