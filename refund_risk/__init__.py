"""Refund risk service: the project's own namespace.

The kernel (`settings`, `errors`, `console`, `config_files`) is the bottom layer and imports
nothing of the project; `model_contract` (what training writes and the service reads) and
`database` (bulk inserts, migrations) sit just above it; `cli` assembles the `refund-risk`
command from every folder's commands and is the top. The layers are stated in pyproject.toml.
"""

__version__ = "0.1.0"
