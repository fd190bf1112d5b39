"""Contract section 9: one hostile input never harms the others (one file per area)."""
