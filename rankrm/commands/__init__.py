"""The ``rankrm`` commands, one module each (``rankrm.cli`` puts them together).

``options``  option types, help panels and :func:`~rankrm.commands.options.fail`
``train``    train, evaluate
``export``   export
``score``    score (offline, a JSONL file)
``serve``    serve
"""
