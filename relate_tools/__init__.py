"""Tools beside the product (checks of the install, not part of a training run)."""
