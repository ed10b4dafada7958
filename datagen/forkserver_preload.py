"""Imported by the ``multiprocess`` forkserver of a local ``datagen run`` when it starts (see
``datagen.procs.die_with_parent``): the pool workers it forks die with it, and their task logs tell write
errors in one line."""

from datagen.procs import arm_forkserver, quiet_write_errors

arm_forkserver()
quiet_write_errors()
