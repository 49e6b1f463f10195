"""occ-deploy: gated, recorded, reversible promotions for the Operator Control Center.

Importing this package is cheap: heavy modules (SQLAlchemy, Fabric, psycopg) are
imported only by the primitives that need them, when they run.
"""

__version__ = "0.1.0"
