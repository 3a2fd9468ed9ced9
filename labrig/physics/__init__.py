"""labrig.physics."""
