"""Domain logic, one module per area. No HTTP here: services take a `Tx` and plain values."""
