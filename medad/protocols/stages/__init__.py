"""The stages of a protocol run, one module each, in the order the runner runs them.

Each module's ``run(state)`` reads what the earlier stages left in the shared
:class:`~medad.protocols.stages.base.RunState` and runs its stage tasks through the one loop,
:func:`~medad.protocols.stages.base.run_tasks`.
"""
