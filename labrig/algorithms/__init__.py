"""labrig.algorithms."""
