"""Training loops (GRPO and variants, SFT) and what they stand on: checkpoints, RNG state.

Sub-modules import their heavy dependencies themselves; importing this package is cheap.
"""
