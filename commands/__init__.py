"""The ``bridge-stg`` command line: one module per subcommand, each with a ``main(argv) -> int``.

These modules are front-ends only (argument parsing, messages, exit codes); what they run lives in the
library (``bridge_stg``, ``bridge_stg.processing``, ``bridge_stg.training``, ``bridge_stg.evaluation``).
"""
