"""The ``r1core train|sft|eval`` commands: each reads the whole run configuration and hands
every component its own section (the only modules that see all of ``RunConfig``)."""
