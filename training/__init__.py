"""Training and export: ranking lists -> losses -> reward model -> train loop -> evaluation.

Everything here may import torch and transformers; the service never imports this package.
"""
