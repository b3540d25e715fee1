"""The subcommands of `rnnmt`, one module each: ``add_parser(subparsers)`` registers the command's flags
and its handler, which imports what the command needs only when it runs (serving commands never import
torch). :mod:`rnnmt.commands.common` holds the flags several commands share."""
