"""labrig.procedures."""
