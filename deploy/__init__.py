"""occ-deploy: gated, recorded, reversible promotions for the Operator Control Center.

Importing this package is cheap: heavy modules (SQLAlchemy, Fabric, psycopg) are
imported only by the primitives that need them, when they run.
"""

__version__ = "0.1.0"

# The third-party libraries a module may import inside a function (start-up stays light:
# `invoke --list` loads none of them). Every other import, and every import of a deploy
# module, stands at the top of its file; tests/test_layers.py checks both.
LAZY_LIBRARIES = frozenset({"sqlalchemy", "psycopg", "fabric", "paramiko", "tabulate", "dotenv", "isal"})
