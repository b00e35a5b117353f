"""dockerops: Docker services run by Salt, from pillar.

The library behind the Salt-facing modules in ``_modules/``, ``_states/`` and
``_grains/``. It never reads Salt's dunders: callers pass ``opts``, ``context``
and pillar data in explicitly.
"""

__version__ = "0.1.0"
