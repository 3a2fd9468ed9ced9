"""Built-in station files (``sim-dnpu``, ``sim-reservoir``), shipped as package data."""
