"""labrig.sim."""
