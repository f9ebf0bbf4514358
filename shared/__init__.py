"""Code shared by the API and the worker: settings, database, services, Novu client."""
