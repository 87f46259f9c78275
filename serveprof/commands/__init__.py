"""The ``serveprof`` subcommands, one module each: parse the arguments, build the settings, call the package.

Only the commands read a config or its defaults (through serveprof.settings); launch/,
measure/, report/ and models/ take the settings as objects.
"""
