"""shopify test helpers (filled in by its primitive)."""
