"""The scoring service: the HTTP API that decides refund requests, its decision log and its keys.

This is the only package that knows HTTP. `serving.app.create_app(settings)` builds the
application; everything it needs (database, event store, models, policy) is made in the app's
lifespan, never at import.
"""
