"""The model as one object and its IO: `ModelSpec`, checkpoints, `Pipeline`, export,
and the upgrade of stored configs.
"""
