"""Development tools, not part of the service: the embedded PostgreSQL and Redis behind
`make run` and `make test` (devstack), the demo data `make run` seeds (seed), and the
`xnovu dev` and `xnovu novu-emulator` commands (cli).

They need the `devstack` extra (`pip install 'xnovu[devstack]'`; `make run` installs it). A
production install leaves it out: `xnovu` then answers these two commands with how to get them.
"""
