"""Commands as plain functions, one module each: usable from click, tests, or another program.

Each command lives in the module of its name (`from migrate.commands.run import run`); what
they share (`GlobalOptions`, the `Console`) is in `context.py`. The CLI imports a command's
module only when that command runs, so a `plan` does not pay at start-up for the phases,
journal and archive code that only `run` needs.
"""
