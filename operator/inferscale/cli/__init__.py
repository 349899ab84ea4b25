"""The ``inferscale`` command line: one entry point, one subcommand per job."""
