"""r1core: DeepSeek-R1-style reinforcement learning of large language models.

``r1core.ops`` is the embeddable surface and needs only torch and triton. The other
sub-packages (models, rollout, rewards, trainer) import their heavy dependencies lazily and
name the extra to install when one is missing.
"""

__version__ = "0.1.0"
