"""The ``bridge-stg`` command line. Each subcommand lives in its own module with a ``main(argv)``."""
