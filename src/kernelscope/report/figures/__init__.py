"""Figure functions, one module per area; each returns a matplotlib Figure and draws nothing on screen."""
