"""The database layer both the event store (`features`) and the service (`serving`) build on:
many-row inserts compiled once (`bulk`) and Alembic migrations run from code (`migrations`).

It knows SQLAlchemy and Alembic, and nothing of features, models or HTTP.
"""
